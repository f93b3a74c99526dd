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
            let log_format = log_format.map(|f| match f {
                LogFormatArg::Json => LogFormat::Json,
                LogFormatArg::Text => LogFormat::Text,
            });
            let reloader = crate::reload::Reloader { path: config, mode: mode.map(Into::into), log_format };
            let cfg = match reloader.log_format {
                Some(format) => Config { log: lgtm_config::LogConfig { format, ..cfg.log.clone() }, ..cfg },
                None => cfg,
            };
            init_tracing(cfg.log.format, &cfg.log.level);
            let runtime =
                match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("lgtm-agent").build() {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("cannot start the runtime: {e}");
                        return ExitCode::from(1);
                    }
                };
            let ended = runtime.block_on(crate::run::run(cfg, reloader));
            // Listeners, files and threads are released before a restart on the new config.
            drop(runtime);
            match ended {
                Ok(crate::run::Ended::Stopped) => ExitCode::SUCCESS,
                Ok(crate::run::Ended::Reload) => restart_in_place(),
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "agent failed");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Replaces this process by a new run of the same binary with the same arguments (the reload of
/// a changed config, after the graceful stop). Returns only when that fails.
fn restart_in_place() -> ExitCode {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let program = std::env::current_exe().ok().or_else(|| args.next().map(Into::into));
    let Some(program) = program else {
        tracing::error!("cannot restart on the new config: the binary's path is unknown");
        return ExitCode::from(1);
    };
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    tracing::info!(binary = %program.display(), "starting again on the new config");
    let error = std::process::Command::new(&program).args(args).exec();
    tracing::error!(error = %error, binary = %program.display(), "cannot restart on the new config");
    ExitCode::from(1)
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything (no-color.org).
fn use_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_tracing(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use std::io::IsTerminal;
    let colour = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::use_colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("".into())));
        assert!(!use_colour(true, Some("1".into())));
        assert!(!use_colour(false, None));
    }
}
