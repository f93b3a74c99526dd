//! The synthetic series of the host target, written as exposition lines after the host's own.
//!
//! `BodyIngester` turns a body into series but, having no HTTP scrape to report on, adds no
//! `up` or `scrape_*` series; the host source appends them to the body instead, which gives
//! them the target's labels and staleness handling like every other series.

use std::collections::HashSet;
use std::fmt::Write as _;

/// What one host scrape reports about itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Synthetic {
    pub up: bool,
    pub duration_seconds: f64,
    /// Samples in the host text (also `scrape_samples_post_metric_relabeling`: no relabeling).
    pub samples: usize,
    pub series_added: usize,
}

impl Synthetic {
    pub fn append_to(&self, body: &mut Vec<u8>) {
        let mut s = String::with_capacity(200);
        if body.last().is_some_and(|&b| b != b'\n') {
            s.push('\n');
        }
        let _ = write!(
            s,
            "up {}\nscrape_duration_seconds {}\nscrape_samples_scraped {}\n\
             scrape_samples_post_metric_relabeling {}\nscrape_series_added {}\n",
            u8::from(self.up),
            self.duration_seconds,
            self.samples,
            self.samples,
            self.series_added,
        );
        body.extend_from_slice(s.as_bytes());
    }
}

/// Counts the samples of a text body and those whose series was not in the previous one
/// (`scrape_series_added`), by a hash of each line's series part.
#[derive(Debug, Default)]
pub(crate) struct NewSeries {
    previous: HashSet<u64>,
    current: HashSet<u64>,
}

impl NewSeries {
    /// `(samples, series added)` of `text`, which becomes the previous body.
    pub fn count(&mut self, text: &str) -> (usize, usize) {
        self.current.clear();
        let mut samples = 0;
        let mut added = 0;
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            samples += 1;
            let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
            let key = xxhash_rust::xxh3::xxh3_64(series.as_bytes());
            if self.current.insert(key) && !self.previous.contains(&key) {
                added += 1;
            }
        }
        std::mem::swap(&mut self.previous, &mut self.current);
        (samples, added)
    }

    /// A failed scrape: every series of the next one is new.
    pub fn clear(&mut self) {
        self.previous.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_samples_and_series_new_since_the_previous_body() {
        let mut n = NewSeries::default();
        assert_eq!(n.count("# HELP a x\n# TYPE a gauge\na 1\nb{x=\"1\"} 2\n"), (2, 2));
        assert_eq!(n.count("a 5\nb{x=\"1\"} 3\nb{x=\"2\"} 3\n"), (3, 1));
        n.clear();
        assert_eq!(n.count("a 5\n"), (1, 1));
    }

    #[test]
    fn synthetic_lines_follow_the_body_on_their_own_lines() {
        let mut body = b"a 1".to_vec();
        Synthetic { up: false, duration_seconds: 0.5, samples: 1, series_added: 0 }.append_to(&mut body);
        let text = String::from_utf8(body).unwrap();
        assert_eq!(
            text,
            "a 1\nup 0\nscrape_duration_seconds 0.5\nscrape_samples_scraped 1\n\
             scrape_samples_post_metric_relabeling 1\nscrape_series_added 0\n"
        );
    }
}
