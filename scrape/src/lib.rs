//! Prometheus scraping: exposition parsers, relabeling, the scrape loop and target manager.
//!
//! Not yet implemented (issue 10).
