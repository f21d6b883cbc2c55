//! `StressChaos`: CPU and memory pressure inside the target's cgroups.

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Stressors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStressor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStressor>,
}

/// `workers` busy loops, each using `load` percent of one core.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CpuStressor {
    pub workers: u32,
    #[serde(default = "full_load")]
    pub load: u32,
}

fn full_load() -> u32 {
    100
}

/// `workers` processes together holding `size` of touched, resident memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MemoryStressor {
    #[serde(default = "one")]
    pub workers: u32,
    pub size: MemorySize,
}

fn one() -> u32 {
    1
}

pub const MAX_WORKERS: u32 = 1024;

impl StressChaos {
    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        self.selector.validate(&path.key("selector"), false, p);
        let sp = path.key("stressors");
        if self.stressors.cpu.is_none() && self.stressors.memory.is_none() {
            p.add(&sp, "give at least one stressor: cpu or memory");
        }
        if let Some(cpu) = &self.stressors.cpu {
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
        if let Some(mem) = &self.stressors.memory {
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
