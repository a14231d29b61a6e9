//! Host metrics and health-probe figures as Prometheus gauges on the registry server's
//! `/metrics`.

use omc_orchestra::health::{InstanceHealthView, SystemSample};
use omc_orchestra::registry::HealthStatus;
use prometheus::{Gauge, GaugeVec, Opts, Registry};

/// The gauges a [`SystemSample`] sets.
#[derive(Clone, Debug)]
pub(crate) struct SystemGauges {
    cpu: Gauge,
    core: GaugeVec,
    temperature: Gauge,
    memory: GaugeVec,
    swap: GaugeVec,
    disk_free: GaugeVec,
    disk_size: GaugeVec,
    net_received: GaugeVec,
    net_transmitted: GaugeVec,
    net_errors: GaugeVec,
    processes: Gauge,
    load: GaugeVec,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<Gauge> {
    let g = Gauge::with_opts(Opts::new(name, help))?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn gauges(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

impl SystemGauges {
    /// Register the gauges into `registry`.
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            cpu: gauge(
                registry,
                "system_cpu_usage_ratio",
                "CPU busy share, all cores.",
            )?,
            core: gauges(
                registry,
                "system_cpu_core_usage_ratio",
                "CPU busy share per core.",
                &["core"],
            )?,
            temperature: gauge(
                registry,
                "system_cpu_temperature_celsius",
                "Hottest temperature sensor, where the host has sensors.",
            )?,
            memory: gauges(
                registry,
                "system_memory_bytes",
                "Memory size and use.",
                &["state"],
            )?,
            swap: gauges(
                registry,
                "system_swap_bytes",
                "Swap size and use.",
                &["state"],
            )?,
            disk_free: gauges(
                registry,
                "system_disk_free_bytes",
                "Free space per disk.",
                &["mount"],
            )?,
            disk_size: gauges(
                registry,
                "system_disk_size_bytes",
                "Size per disk.",
                &["mount"],
            )?,
            net_received: gauges(
                registry,
                "system_network_received_bytes",
                "Bytes received per interface since boot.",
                &["interface"],
            )?,
            net_transmitted: gauges(
                registry,
                "system_network_transmitted_bytes",
                "Bytes sent per interface since boot.",
                &["interface"],
            )?,
            net_errors: gauges(
                registry,
                "system_network_errors",
                "Network errors per interface and direction since boot.",
                &["interface", "direction"],
            )?,
            processes: gauge(registry, "system_processes", "Processes running.")?,
            load: gauges(
                registry,
                "system_load_average",
                "Load average by window.",
                &["window"],
            )?,
        })
    }

    /// Set every gauge from `sample`.
    pub(crate) fn update(&self, sample: &SystemSample) {
        self.cpu.set(sample.cpu.total_percent / 100.0);
        for (i, usage) in sample.cpu.per_core_percent.iter().enumerate() {
            self.core
                .with_label_values(&[i.to_string()])
                .set(usage / 100.0);
        }
        if let Some(t) = sample.cpu.temperature_celsius {
            self.temperature.set(t);
        }
        let used = sample.memory_used_bytes as f64;
        self.memory.with_label_values(&["used"]).set(used);
        let total = sample.memory_total_bytes as f64;
        self.memory.with_label_values(&["total"]).set(total);
        self.swap
            .with_label_values(&["used"])
            .set(sample.swap_used_bytes as f64);
        self.swap
            .with_label_values(&["total"])
            .set(sample.swap_total_bytes as f64);
        for disk in &sample.disks {
            let mount = [disk.mount.as_str()];
            self.disk_free
                .with_label_values(&mount)
                .set(disk.available_bytes as f64);
            self.disk_size
                .with_label_values(&mount)
                .set(disk.total_bytes as f64);
        }
        for net in &sample.networks {
            let name = net.interface.as_str();
            self.net_received
                .with_label_values(&[name])
                .set(net.received_bytes as f64);
            self.net_transmitted
                .with_label_values(&[name])
                .set(net.transmitted_bytes as f64);
            self.net_errors
                .with_label_values(&[name, "receive"])
                .set(net.receive_errors as f64);
            self.net_errors
                .with_label_values(&[name, "transmit"])
                .set(net.transmit_errors as f64);
        }
        self.processes.set(sample.processes as f64);
        for (window, value) in ["1m", "5m", "15m"].iter().zip(sample.load_average) {
            self.load.with_label_values(&[*window]).set(value);
        }
    }
}

/// Health-probe figures per instance as gauges: response time, error share, verdict.
#[derive(Clone, Debug)]
pub(crate) struct ProbeGauges {
    latency: GaugeVec,
    errors: GaugeVec,
    status: GaugeVec,
}

impl ProbeGauges {
    /// Register the gauges into `registry`.
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let labels = ["service", "instance"];
        Ok(Self {
            latency: gauges(
                registry,
                "health_probe_latency_seconds",
                "Mean health-probe response time over the recent probes.",
                &labels,
            )?,
            errors: gauges(
                registry,
                "health_probe_error_ratio",
                "Share of the recent health probes that failed.",
                &labels,
            )?,
            status: gauges(
                registry,
                "health_check_status",
                "The checker's verdict: 0 passing, 1 warning, 2 critical.",
                &labels,
            )?,
        })
    }

    /// Replace every series with `instances` (service, id, view).
    pub(crate) fn update(&self, instances: &[(String, String, InstanceHealthView)]) {
        for g in [&self.latency, &self.errors, &self.status] {
            g.reset();
        }
        for (service, id, view) in instances {
            let labels = [service.as_str(), id.as_str()];
            self.latency
                .with_label_values(&labels)
                .set(view.mean_latency_ms / 1000.0);
            self.errors.with_label_values(&labels).set(view.error_rate);
            let status = match view.status {
                HealthStatus::Passing => 0.0,
                HealthStatus::Warning => 1.0,
                HealthStatus::Critical => 2.0,
            };
            self.status.with_label_values(&labels).set(status);
        }
    }
}
