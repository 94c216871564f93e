//! Live progress: jobs send [`Event`]s, one task owns the terminal.
//!
//! On a terminal, indicatif draws a bar per host (up to [`MAX_BARS`] hosts; beyond
//! that only the total, since 400 bars help nobody) and a total bar. Otherwise (CI,
//! `| tee`, a log file) each host gets plain lines when it changes stage or finishes,
//! and the total is printed every few seconds. Everything goes to stderr, so stdout
//! stays clean for `--json`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

/// Hosts beyond this count get no bar of their own.
pub const MAX_BARS: usize = 32;

/// Something a job reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// A host entered a stage ("connect", "bootstrap", "fetch").
    Stage { host: String, stage: &'static str },
    /// Bytes of the artifact a host has, verified.
    Bytes { host: String, bytes: u64 },
    /// A host finished, one way or the other.
    Done {
        host: String,
        ok: bool,
        summary: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Lines,
    Quiet,
}

impl Mode {
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

/// The sending side, cheap to clone into jobs.
#[derive(Debug, Clone)]
pub struct Sender(mpsc::UnboundedSender<Event>);

impl Sender {
    pub fn send(&self, e: Event) {
        let _ = self.0.send(e);
    }

    pub fn stage(&self, host: &str, stage: &'static str) {
        self.send(Event::Stage {
            host: host.to_string(),
            stage,
        });
    }
}

pub struct Progress {
    tx: Sender,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts the display task for `hosts`, each expecting `bytes_per_host`.
    pub fn start(mode: Mode, hosts: &[String], bytes_per_host: u64) -> Progress {
        let (tx, rx) = mpsc::unbounded_channel();
        let hosts = hosts.to_vec();
        let task = tokio::spawn(async move {
            match mode {
                Mode::Bars => bars(rx, &hosts, bytes_per_host).await,
                Mode::Lines => lines(rx, &hosts, bytes_per_host).await,
                Mode::Quiet => {
                    let mut rx = rx;
                    while rx.recv().await.is_some() {}
                }
            }
        });
        Progress {
            tx: Sender(tx),
            task,
        }
    }

    pub fn sender(&self) -> Sender {
        self.tx.clone()
    }

    /// Waits until every sender is gone and the display is finished.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// MiB, the unit the progress bars use too.
fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// The plain line the total gets every few seconds: hosts done, bytes, the rate over
/// the last interval and the time left at that rate, in the bars' binary units.
fn progress_line(done: usize, hosts: usize, sum: u64, total: u64, rate: f64) -> String {
    let eta = if rate >= 1.0 {
        let secs = total.saturating_sub(sum) as f64 / rate;
        crate::config::units::format_duration(Duration::from_secs(secs.ceil() as u64))
    } else {
        "unknown".to_string()
    };
    format!(
        "progress: {done}/{hosts} hosts done, {:.0} of {:.0} MiB, {:.1} MiB/s, ETA {eta}",
        mib(sum),
        mib(total),
        mib(rate as u64)
    )
}

async fn lines(mut rx: mpsc::UnboundedReceiver<Event>, hosts: &[String], per_host: u64) {
    let total = per_host * hosts.len() as u64;
    let mut have: HashMap<String, u64> = HashMap::new();
    let mut done = 0usize;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    let (mut last_sum, mut last_at) = (0u64, Instant::now());
    loop {
        tokio::select! {
            e = rx.recv() => match e {
                None => break,
                Some(Event::Stage { host, stage }) => eprintln!("{host:<16} {stage}"),
                Some(Event::Bytes { host, bytes }) => {
                    have.insert(host, bytes);
                }
                Some(Event::Done { host, ok, summary }) => {
                    done += 1;
                    if ok {
                        have.insert(host.clone(), per_host);
                    }
                    let word = if ok { "ok" } else { "FAILED" };
                    eprintln!("{host:<16} {word} {summary}");
                }
            },
            _ = tick.tick() => {
                let sum: u64 = have.values().sum();
                let now = Instant::now();
                let rate = sum.saturating_sub(last_sum) as f64
                    / now.duration_since(last_at).as_secs_f64().max(1e-3);
                (last_sum, last_at) = (sum, now);
                if done < hosts.len() {
                    eprintln!("{}", progress_line(done, hosts.len(), sum, total, rate));
                }
            }
        }
    }
}

async fn bars(mut rx: mpsc::UnboundedReceiver<Event>, hosts: &[String], per_host: u64) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template(
            "{prefix:<16} {wide_bar} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4} {msg}",
        )
        .expect("valid template");
    let total_style = ProgressStyle::with_template(
        "{prefix:<16} {wide_bar} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4} {msg}",
    )
    .expect("valid template");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    if hosts.len() <= MAX_BARS {
        for h in hosts {
            let b = multi.add(ProgressBar::new(per_host).with_style(style.clone()));
            b.set_prefix(h.clone());
            b.set_message("waiting");
            bars.insert(h.clone(), b);
        }
    }
    let total = multi.add(ProgressBar::new(per_host * hosts.len() as u64).with_style(total_style));
    total.set_prefix("total");
    total.enable_steady_tick(Duration::from_millis(250));
    let mut have: HashMap<String, u64> = HashMap::new();
    let (mut ok, mut failed) = (0usize, 0usize);
    let started = Instant::now();
    while let Some(e) = rx.recv().await {
        match e {
            Event::Stage { host, stage } => {
                if let Some(b) = bars.get(&host) {
                    b.set_message(stage);
                }
            }
            Event::Bytes { host, bytes } => {
                if let Some(b) = bars.get(&host) {
                    b.set_position(bytes);
                }
                have.insert(host, bytes);
                total.set_position(have.values().sum());
            }
            Event::Done {
                host,
                ok: good,
                summary,
            } => {
                if good {
                    ok += 1;
                } else {
                    failed += 1;
                }
                match bars.get(&host) {
                    Some(b) => {
                        if good {
                            b.set_position(per_host);
                            b.finish_with_message(format!("ok {summary}"));
                        } else {
                            b.abandon_with_message(format!("FAILED {summary}"));
                        }
                    }
                    None if !good => {
                        let _ = multi.println(format!("{host:<16} FAILED {summary}"));
                    }
                    None => {}
                }
                total.set_message(format!("{ok} ok, {failed} failed of {}", hosts.len()));
            }
        }
    }
    total.finish_with_message(format!(
        "{ok} ok, {failed} failed of {} in {:.1}s",
        hosts.len(),
        started.elapsed().as_secs_f64()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_progress_line_has_the_rate_and_the_time_left_in_binary_units() {
        let line = progress_line(3, 8, 290 << 20, 2517 << 20, (50 << 20) as f64);
        assert_eq!(
            line,
            "progress: 3/8 hosts done, 290 of 2517 MiB, 50.0 MiB/s, ETA 45s"
        );
        let stalled = progress_line(0, 8, 0, 2517 << 20, 0.0);
        assert!(stalled.ends_with("0.0 MiB/s, ETA unknown"), "{stalled}");
    }
}
