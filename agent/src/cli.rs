//! The CLI contract of DESIGN.md: `run`, `validate`, `print-config`, `--version`.
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use lgtm_config::{Config, LogFormat, Mode};

#[derive(Parser, Debug)]
#[command(name = "lgtm-agent", version, about = "Logs, metrics and traces from Kubernetes to Mimir, Loki and Tempo")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent (the main job).
    Run {
        #[arg(long, short, env = "LGTM_AGENT_CONFIG")]
        config: PathBuf,
        /// Overrides `mode` of the file.
        #[arg(long)]
        mode: Option<ModeArg>,
        /// Overrides `log.format` of the file.
        #[arg(long)]
        log_format: Option<LogFormatArg>,
    },
    /// Check a config file: exit 0, or 2 with an error naming the field and line.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        mode: Option<ModeArg>,
    },
    /// Print the full default config of a mode, commented.
    PrintConfig {
        #[arg(long, default_value = "daemonset")]
        mode: ModeArg,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ModeArg {
    Daemonset,
    Cluster,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Daemonset => Mode::Daemonset,
            ModeArg::Cluster => Mode::Cluster,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormatArg {
    Text,
    Json,
}

pub fn execute(cli: Cli) -> ExitCode {
    match cli.command {
        Command::PrintConfig { mode } => {
            print!("{}", lgtm_config::default_config_yaml(mode.into()));
            ExitCode::SUCCESS
        }
        Command::Validate { config, mode } => match Config::load(&config, mode.map(Into::into)) {
            Ok(c) => {
                println!("{}: valid ({} mode)", config.display(), c.mode().as_str());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config, mode, log_format } => {
            let cfg = match Config::load(&config, mode.map(Into::into)) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let format = match log_format {
                Some(LogFormatArg::Json) => LogFormat::Json,
                Some(LogFormatArg::Text) => LogFormat::Text,
                None => cfg.log.format,
            };
            init_tracing(format, &cfg.log.level);
            let runtime =
                match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("lgtm-agent").build() {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("cannot start the runtime: {e}");
                        return ExitCode::from(1);
                    }
                };
            match runtime.block_on(crate::run::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "agent failed");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn init_tracing(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
