//! `ledger run`: the runtime with the built-in callables, a live line of
//! progress, and a graceful stop on SIGTERM or Ctrl-C.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use execution_ledger::{EventKind, Ledger, ScheduledLater};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::Cli;

/// Counts of executions that ended since the monitor started, read from a
/// subscription to the log.
#[derive(Default)]
pub(crate) struct Ended {
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) retried: AtomicU64,
}

impl Ended {
    pub(crate) fn total(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.timed_out.load(Ordering::Relaxed)
            + self.cancelled.load(Ordering::Relaxed)
    }
}

/// Follows the log and shows progress: a live line on a terminal, a plain
/// line every few seconds otherwise.
pub(crate) struct Monitor {
    ledger: Ledger,
    pub(crate) ended: Arc<Ended>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    bar: Option<ProgressBar>,
    started: Instant,
    last_plain: Instant,
}

impl Monitor {
    pub(crate) fn start(ledger: &Ledger, bar: Option<ProgressBar>) -> Monitor {
        let ended = Arc::new(Ended::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (ended, stop) = (ended.clone(), stop.clone());
            let mut sub = ledger.subscribe(ledger.head().seq + 1);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(Some(event)) = sub.next_timeout(Duration::from_millis(100)) else {
                        continue;
                    };
                    let counter = match event.kind {
                        EventKind::Completed { .. } => &ended.completed,
                        EventKind::Failed { .. } => &ended.failed,
                        EventKind::TimedOut { .. } => &ended.timed_out,
                        EventKind::Cancelled { .. } => &ended.cancelled,
                        EventKind::RetryScheduled { .. } => &ended.retried,
                        _ => continue,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        Monitor {
            ledger: ledger.clone(),
            ended,
            stop,
            thread: Some(thread),
            bar,
            started: Instant::now(),
            last_plain: Instant::now(),
        }
    }

    pub(crate) fn line(&self) -> String {
        let c = self.ledger.counts();
        let e = &self.ended;
        let rate = e.total() as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "queued {} (waiting {}, held {}) running {} | completed {} failed {} timeout {} cancelled {} retries {} | {rate:.0}/s",
            c.queued,
            c.waiting,
            c.held,
            c.running,
            e.completed.load(Ordering::Relaxed),
            e.failed.load(Ordering::Relaxed),
            e.timed_out.load(Ordering::Relaxed),
            e.cancelled.load(Ordering::Relaxed),
            e.retried.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn render(&mut self) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.ended.total());
                bar.set_message(self.line());
            }
            None if self.last_plain.elapsed() >= Duration::from_secs(5) => {
                self.last_plain = Instant::now();
                let _ = writeln!(std::io::stderr(), "{}", self.line());
            }
            None => {}
        }
    }

    pub(crate) fn finish(mut self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.line()
    }
}

/// How far ahead `--exit-when-idle` waits for work that waits for a retry
/// or run-at time; work due later is left for a later run (`ledger run
/// --help` and README.md state it).
pub(crate) const IDLE_HORIZON: Duration = Duration::from_secs(10);

pub(crate) fn run(
    cli: &Cli,
    options: crate::serve::RuntimeOptions,
    grace: Duration,
    exit_when_idle: bool,
    retention: Option<(execution_ledger::RetentionPolicy, Duration)>,
) -> Result<()> {
    let ledger = crate::backend::open(cli)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (summary, later) = rt.block_on(async {
        let stop = crate::serve::stop_signal()?;
        tokio::pin!(stop);
        // Following the log from before the workers start: every execution
        // that ends in this run is counted.
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        // Refused (an engine that cannot redact) before anything starts.
        let retaining = retention
            .map(|(policy, every)| crate::serve::Retaining::start(ledger.clone(), policy, every))
            .transpose()?;
        let mut monitor = Monitor::start(&ledger, bar);
        let runtime = Arc::new(
            options.builder(&ledger, "run").start().await?,
        );
        // The other `ledger` commands (and workers elsewhere) reach the
        // ledger through it while it runs.
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let mut serving = crate::serve::Serving::start(
            cli.dir(),
            ledger.clone(),
            runtime.clone(),
            loopback,
            None,
        )
        .await?;
        let later = loop {
            tokio::select! {
                signal = &mut stop => {
                    let _ = writeln!(std::io::stderr(), "{}", crate::serve::stopping(signal, grace));
                    break None;
                }
                later = runtime.wait_idle_within(IDLE_HORIZON), if exit_when_idle => break Some(later),
                err = serving.ended() => return Err(err),
                () = tokio::time::sleep(Duration::from_millis(200)) => monitor.render(),
            }
        };
        if let Some(retaining) = retaining {
            // Idle: what settled since the last pass is due too.
            if later.is_some() {
                retaining.finish().await;
            } else {
                retaining.stop().await;
            }
        }
        serving.stop(grace).await?;
        anyhow::Ok((monitor.finish(), later))
    })?;
    if cli.json {
        let c = ledger.counts();
        let mut doc = serde_json::json!({ "head": ledger.head(), "live": c });
        if let Some(later) = &later {
            doc["scheduledLater"] =
                serde_json::json!({ "count": later.count, "earliest": later.earliest });
            doc["unclaimed"] = serde_json::json!({
                "count": later.unclaimed,
                "callables": later.unclaimed_callables,
            });
        }
        writeln!(std::io::stdout(), "{doc}")?;
    } else {
        writeln!(std::io::stdout(), "{summary}")?;
        if let Some(ScheduledLater {
            count,
            earliest: Some(earliest),
            ..
        }) = &later
        {
            writeln!(
                std::io::stdout(),
                "{count} scheduled later, the earliest at {}: left for a later run",
                crate::output::time(earliest)
            )?;
        }
        if let Some(later) = later.filter(|l| l.unclaimed > 0) {
            writeln!(
                std::io::stdout(),
                "{} queued for callables no live worker runs ({}): left for a worker",
                later.unclaimed,
                later.unclaimed_callables.join(", ")
            )?;
        }
    }
    Ok(())
}
