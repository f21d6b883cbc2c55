//! `StressChaos`: CPU and memory pressure inside the target's cgroups.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::path::FieldPath;
use crate::selector::Selector;
use crate::units::MemorySize;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StressChaos {
    pub selector: Selector,
    pub stressors: Stressors,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
/// The stressors to run; at least one.
pub struct Stressors {
    /// Busy loops using CPU time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStressor>,
    /// Processes holding resident memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStressor>,
}

/// `workers` busy loops, each using `load` percent of one core.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CpuStressor {
    /// Number of busy loops, 1..=1024.
    #[schemars(range(min = 1, max = 1024))]
    pub workers: u32,
    /// Percent of one core each loop uses, 0..=100 (100 by default).
    #[serde(default = "full_load")]
    #[schemars(range(max = 100))]
    pub load: u32,
}

fn full_load() -> u32 {
    100
}

/// `workers` processes together holding `size` of touched, resident memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MemoryStressor {
    /// Number of processes sharing `size` (1 by default).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub workers: u32,
    /// Memory held: `256MiB`, `1GB`, or a percentage of the memory limit: `50%`.
    pub size: MemorySize,
}

fn one() -> u32 {
    1
}

pub const MAX_WORKERS: u32 = 1024;

impl StressChaos {
    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        self.selector.validate(&path.key("selector"), false, p);
        self.stressors.validate(&path.key("stressors"), p);
    }
}

impl Stressors {
    /// Checks the stressors; `sp` is the path of the `stressors` mapping.
    pub fn validate(&self, sp: &FieldPath, p: &mut Problems) {
        if self.cpu.is_none() && self.memory.is_none() {
            p.add(sp, "give at least one stressor: cpu or memory");
        }
        if let Some(cpu) = &self.cpu {
            let cp = sp.key("cpu");
            if cpu.workers == 0 || cpu.workers > MAX_WORKERS {
                p.add(
                    &cp.key("workers"),
                    format!("must be 1..={MAX_WORKERS}, got {}", cpu.workers),
                );
            }
            if cpu.load > 100 {
                p.add(
                    &cp.key("load"),
                    format!("must be 0..=100, got {}", cpu.load),
                );
            }
        }
        if let Some(mem) = &self.memory {
            let mp = sp.key("memory");
            if mem.workers == 0 || mem.workers > MAX_WORKERS {
                p.add(
                    &mp.key("workers"),
                    format!("must be 1..={MAX_WORKERS}, got {}", mem.workers),
                );
            }
            match mem.size {
                MemorySize::Bytes(b) if b.0 == 0 => {
                    p.add(&mp.key("size"), "must be greater than zero")
                }
                MemorySize::PercentOfLimit(pc) if pc.0 <= 0.0 => {
                    p.add(&mp.key("size"), "must be greater than 0%")
                }
                _ => {}
            }
        }
    }
}
