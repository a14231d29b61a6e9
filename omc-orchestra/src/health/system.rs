//! Host metrics from `sysinfo`: CPU, temperature, memory and swap, disks, network, process
//! count and load average, sampled into a bounded time series.

use super::{AlertEngine, Labels};
use crate::events::{types, EventBus, EventPriority, NewEvent};
use crate::SharedClock;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use sysinfo::{Components, Disks, Networks, ProcessRefreshKind, ProcessesToUpdate, System};

/// Samples kept (a day at one a minute).
pub const DEFAULT_SYSTEM_HISTORY: usize = 1440;

/// CPU usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CpuSample {
    /// All cores, in percent.
    pub total_percent: f64,
    /// Each core, in percent.
    pub per_core_percent: Vec<f64>,
    /// The hottest sensor in °C, where the host has sensors.
    pub temperature_celsius: Option<f64>,
}

/// One disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DiskSample {
    /// Where it is mounted.
    pub mount: String,
    /// Size in bytes.
    pub total_bytes: u64,
    /// Free bytes.
    pub available_bytes: u64,
    /// Free share in percent.
    pub free_percent: f64,
}

/// One network interface, counted since boot.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NetworkSample {
    /// Interface name.
    pub interface: String,
    /// Bytes received.
    pub received_bytes: u64,
    /// Bytes sent.
    pub transmitted_bytes: u64,
    /// Receive errors.
    pub receive_errors: u64,
    /// Transmit errors.
    pub transmit_errors: u64,
}

/// The host at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SystemSample {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// The host's name (alerts carry it as the `host` label).
    pub host: String,
    /// CPU.
    pub cpu: CpuSample,
    /// Memory size in bytes.
    pub memory_total_bytes: u64,
    /// Memory in use in bytes.
    pub memory_used_bytes: u64,
    /// Memory in use in percent.
    pub memory_percent: f64,
    /// Swap size in bytes.
    pub swap_total_bytes: u64,
    /// Swap in use in bytes.
    pub swap_used_bytes: u64,
    /// Each disk.
    pub disks: Vec<DiskSample>,
    /// Each network interface.
    pub networks: Vec<NetworkSample>,
    /// Processes running.
    pub processes: usize,
    /// Load average over 1, 5 and 15 minutes (zeros where the host has none).
    pub load_average: [f64; 3],
}

struct Sources {
    system: System,
    disks: Disks,
    networks: Networks,
    components: Option<Components>,
    primed: bool,
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl Sources {
    fn open() -> Option<Self> {
        Some(Self {
            system: System::new().ok()?,
            disks: Disks::new_with_refreshed_list().ok()?,
            networks: Networks::new_with_refreshed_list().ok()?,
            // Hosts without sensors (containers, VMs) have no temperature.
            components: Components::new_with_refreshed_list().ok(),
            primed: false,
        })
    }

    /// Read everything; blocking (it reads `/proc`).
    fn sample(&mut self, at: DateTime<Utc>) -> SystemSample {
        if !self.primed {
            // CPU usage is a difference between two reads.
            self.system.refresh_cpu_usage();
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
            self.primed = true;
        }
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing(),
        );
        self.disks.refresh(true);
        self.networks.refresh(true);
        if let Some(components) = &mut self.components {
            components.refresh(true);
        }
        let s = &self.system;
        let temperature = self
            .components
            .iter()
            .flat_map(|list| list.iter())
            .filter_map(|c| c.temperature())
            .filter(|t| t.is_finite())
            .fold(None, |hot: Option<f32>, t| {
                Some(hot.map_or(t, |h| h.max(t)))
            });
        let mut disks: Vec<DiskSample> = self
            .disks
            .iter()
            .filter(|d| d.total_space() > 0)
            .map(|d| DiskSample {
                mount: d.mount_point().to_string_lossy().into_owned(),
                total_bytes: d.total_space(),
                available_bytes: d.available_space(),
                free_percent: percent(d.available_space(), d.total_space()),
            })
            .collect();
        disks.sort_by(|a, b| a.mount.cmp(&b.mount));
        disks.dedup_by(|a, b| a.mount == b.mount);
        let mut networks: Vec<NetworkSample> = self
            .networks
            .iter()
            .map(|(name, n)| NetworkSample {
                interface: name.to_string_lossy().into_owned(),
                received_bytes: n.total_received(),
                transmitted_bytes: n.total_transmitted(),
                receive_errors: n.total_errors_on_received(),
                transmit_errors: n.total_errors_on_transmitted(),
            })
            .collect();
        networks.sort_by(|a, b| a.interface.cmp(&b.interface));
        let load = System::load_average()
            .map(|l| [l.one, l.five, l.fifteen])
            .unwrap_or_default();
        SystemSample {
            at,
            host: System::host_name().unwrap_or_default(),
            cpu: CpuSample {
                total_percent: f64::from(s.global_cpu_usage()),
                per_core_percent: s.cpus().iter().map(|c| f64::from(c.usage())).collect(),
                temperature_celsius: temperature.map(f64::from),
            },
            memory_total_bytes: s.total_memory(),
            memory_used_bytes: s.used_memory(),
            memory_percent: percent(s.used_memory(), s.total_memory()),
            swap_total_bytes: s.total_swap(),
            swap_used_bytes: s.used_swap(),
            disks,
            networks,
            processes: s.processes().len(),
            load_average: load,
        }
    }
}

/// Samples the host on a timer into a bounded series, feeding alerts and the event bus.
pub struct SystemMonitor {
    clock: SharedClock,
    keep: usize,
    sources: Arc<Mutex<Option<Sources>>>,
    samples: Mutex<VecDeque<SystemSample>>,
    alerts: Option<Arc<AlertEngine>>,
    events: Option<Arc<dyn EventBus>>,
}

impl std::fmt::Debug for SystemMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemMonitor")
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl SystemMonitor {
    /// A monitor keeping the last `keep` samples.
    pub fn new(clock: SharedClock, keep: usize) -> Self {
        Self {
            clock,
            keep: keep.max(1),
            sources: Arc::new(Mutex::new(None)),
            samples: Mutex::new(VecDeque::new()),
            alerts: None,
            events: None,
        }
    }

    /// Feed `cpu_usage_percent`, `memory_usage_percent` and `disk_free_percent{mount}` to
    /// `alerts` after each sample.
    pub fn with_alerts(mut self, alerts: Arc<AlertEngine>) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Publish each sample's headline figures as a `PERFORMANCE_METRIC` event.
    pub fn with_events(mut self, events: Arc<dyn EventBus>) -> Self {
        self.events = Some(events);
        self
    }

    /// Take a sample now, keep it, feed alerts and events; `None` when the host's figures
    /// cannot be read.
    pub async fn sample(&self) -> Option<SystemSample> {
        let sources = self.sources.clone();
        let at = self.clock.now();
        let sample = tokio::task::spawn_blocking(move || {
            let mut guard = sources.lock();
            if guard.is_none() {
                *guard = Sources::open();
            }
            guard.as_mut().map(|s| s.sample(at))
        })
        .await
        .ok()??;
        {
            let mut samples = self.samples.lock();
            if samples.len() >= self.keep {
                samples.pop_front();
            }
            samples.push_back(sample.clone());
        }
        if let Some(alerts) = &self.alerts {
            let host = Labels::from([("host".to_owned(), sample.host.clone())]);
            alerts
                .observe("cpu_usage_percent", host.clone(), sample.cpu.total_percent)
                .await;
            alerts
                .observe("memory_usage_percent", host.clone(), sample.memory_percent)
                .await;
            for disk in &sample.disks {
                let mut labels = host.clone();
                labels.insert("mount".to_owned(), disk.mount.clone());
                alerts
                    .observe("disk_free_percent", labels, disk.free_percent)
                    .await;
            }
        }
        if let Some(events) = &self.events {
            let data = serde_json::json!({
                "kind": "system",
                "host": sample.host,
                "cpuPercent": sample.cpu.total_percent,
                "memoryPercent": sample.memory_percent,
                "loadAverage": sample.load_average,
                "processes": sample.processes,
            });
            let mut event = NewEvent::new(types::PERFORMANCE_METRIC, "omc-orchestra", data);
            event.priority = EventPriority::Low;
            event.tags = vec!["metrics".to_owned(), "system".to_owned()];
            if let Err(err) = events.publish(event).await {
                tracing::debug!(error = %err, "cannot publish system metrics");
            }
        }
        Some(sample)
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<SystemSample> {
        self.samples.lock().back().cloned()
    }

    /// The last `limit` samples, oldest first.
    pub fn history(&self, limit: usize) -> Vec<SystemSample> {
        let samples = self.samples.lock();
        let skip = samples.len().saturating_sub(limit);
        samples.iter().skip(skip).cloned().collect()
    }

    /// Sample every `every` until the task is aborted, calling `after` with each sample
    /// (the server updates its Prometheus gauges there).
    pub fn spawn<F>(self: Arc<Self>, every: Duration, after: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn(&SystemSample) + Send + 'static,
    {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Some(sample) = self.sample().await {
                    after(&sample);
                }
            }
        })
    }
}
