//! Prometheus scraping: exposition parsers, relabeling, the scrape loop and target manager.

pub mod labels;
pub mod parser;
pub mod relabel;
