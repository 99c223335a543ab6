//! `ledger`: the operator's command line for execution-ledger.
//!
//! Exit codes: 0 success; 1 a failure (not found, refused transition,
//! damaged log, I/O); 2 a usage error (bad arguments or values).

mod backend;
mod bench;
mod cli;
mod commands;
mod decode;
mod demo;
mod output;
mod run;
// The benchmark scenarios, shared with the criterion benches.
#[path = "../../../benches/common/scenarios.rs"]
mod scenarios;
mod secrets;
mod serve;
mod worker;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Exit, Usage};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            let _ = writeln!(std::io::stderr(), "{}", usage_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEDGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (stderr closed) is dropped:
        // reporting that on stderr again would panic the thread.
        .log_internal_errors(false)
        .init();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(Exit(code)) = e.downcast_ref::<Exit>() {
                return ExitCode::from(*code);
            }
            let broken_pipe = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            let code = if e.downcast_ref::<Usage>().is_some() {
                2
            } else {
                1
            };
            let _ = writeln!(std::io::stderr(), "error: {}", one_line(&e));
            ExitCode::from(code)
        }
    }
}

/// A clap error on one line: its first line and the indented lines under
/// it (the arguments it names), without the tips, the usage block and the
/// pointer to `--help`.
fn usage_line(text: &str) -> String {
    let mut lines = text.lines();
    let mut line = lines
        .next()
        .unwrap_or("error: invalid arguments")
        .to_owned();
    let named: Vec<&str> = lines
        .take_while(|l| l.starts_with(' ') && !l.trim().is_empty())
        .map(str::trim)
        .collect();
    if !named.is_empty() {
        line.push(' ');
        line.push_str(&named.join(", "));
    }
    line
}

/// The error and its causes on one line, without repeating a cause that
/// the message already includes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !line.contains(&c) {
            line.push_str(": ");
            line.push_str(&c);
        }
    }
    line.replace('\n', " ")
}
