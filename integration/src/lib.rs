//! Test support: fakes of Loki and OTLP receivers, peers management.
