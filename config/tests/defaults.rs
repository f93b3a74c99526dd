//! The defaults of each mode, and `print-config`'s templates, which must parse to exactly them.

use lgtm_config::{default_config_yaml, Config, Mode};

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn each_template_parses_to_the_defaults_of_its_mode() {
    for mode in [Mode::Daemonset, Mode::Cluster] {
        let template = default_config_yaml(mode);
        let parsed = Config::from_yaml(&format!("{} template", mode.as_str()), template, None, no_env)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, Config::default_for(mode), "template of {}", mode.as_str());
    }
}

#[test]
fn each_template_documents_every_key() {
    fn keys(value: &serde_yaml::Value, out: &mut Vec<String>) {
        match value {
            serde_yaml::Value::Mapping(m) => {
                for (k, v) in m {
                    out.extend(k.as_str().map(str::to_string));
                    keys(v, out);
                }
            }
            serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }
    for mode in [Mode::Daemonset, Mode::Cluster] {
        let mut all = Vec::new();
        keys(&serde_yaml::to_value(Config::default_for(mode)).unwrap(), &mut all);
        // The keys of `basic_auth`, which has no default and so is not in the tree.
        all.extend(["username", "password", "password_file"].map(String::from));
        let template = default_config_yaml(mode);
        for key in all {
            assert!(template.contains(&format!("{key}:")), "{} template does not document `{key}`", mode.as_str());
        }
    }
}

#[test]
fn an_empty_file_is_the_defaults_of_daemonset() {
    for text in ["", "\n", "# nothing\n", "---\n"] {
        let c = Config::from_yaml("empty.yaml", text, None, no_env).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(c, Config::default_for(Mode::Daemonset), "{text:?}");
    }
}

#[test]
fn daemonset_enables_logs_kubelet_host_metrics_and_otlp() {
    let c = Config::default_for(Mode::Daemonset);
    assert_eq!(c.mode(), Mode::Daemonset);
    assert!(c.logs.enabled());
    assert!(c.scrape.kubelet.enabled());
    assert!(c.scrape.host_metrics.enabled());
    assert!(c.otlp.enabled());
    assert!(!c.scrape.monitors.enabled());
    assert!(!c.events.enabled());
    assert!(!c.tail_sampling.enabled());
    assert!(!c.cluster_state.enabled());
}

#[test]
fn cluster_enables_monitors_events_tail_sampling_cluster_state_and_otlp() {
    let c = Config::default_for(Mode::Cluster);
    assert_eq!(c.mode(), Mode::Cluster);
    assert!(c.scrape.monitors.enabled());
    assert!(c.events.enabled());
    assert!(c.tail_sampling.enabled());
    assert!(c.cluster_state.enabled());
    assert!(c.otlp.enabled());
    assert!(!c.logs.enabled());
    assert!(!c.scrape.kubelet.enabled());
    assert!(!c.scrape.host_metrics.enabled());
}

#[test]
fn mode_flag_overrides_the_file_but_not_explicit_switches() {
    let text = "mode: daemonset\nevents: { enabled: false }\nlogs: { enabled: true }\n";
    let c = Config::from_yaml("c.yaml", text, Some(Mode::Cluster), no_env).unwrap();
    assert_eq!(c.mode(), Mode::Cluster);
    assert!(c.scrape.monitors.enabled(), "left out: the default of the mode in force");
    assert!(!c.events.enabled(), "written in the file: kept");
    assert!(c.logs.enabled(), "written in the file: kept");
    let c = Config::from_yaml("c.yaml", "mode: cluster\n", None, no_env).unwrap();
    assert_eq!(c, Config::default_for(Mode::Cluster));
    let c = Config::from_yaml("c.yaml", "mode: cluster\n", Some(Mode::Daemonset), no_env).unwrap();
    assert_eq!(c, Config::default_for(Mode::Daemonset));
}

#[test]
fn a_left_out_scrape_timeout_is_never_longer_than_the_interval() {
    let c = Config::from_yaml("c.yaml", "scrape: { interval: 5s }\n", None, no_env).unwrap();
    assert_eq!(c.scrape.timeout, lgtm_config::Duration::from_secs(5));
    let e = Config::from_yaml("c.yaml", "scrape: { interval: 5s, timeout: 6s }\n", None, no_env).unwrap_err();
    assert_eq!(e.to_string(), "c.yaml:1: scrape.timeout: 6s is longer than scrape.interval 5s");
}
