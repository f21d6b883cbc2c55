//! Measurements, not assertions: what the IOChaos pass-through costs when no rule matches.
//! The same directory is measured without the fault and with an IOChaos over it whose `path`
//! matches nothing, side by side in one run: 1 MiB sequential write and read throughput, and
//! the rate of small-file open+fstat+close and of stat by path. Run with
//! `cargo test -p havoc-faults --release --test io_bench -- --ignored --nocapture`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use havoc_faults::{Context, Target};

const FILE_MIB: usize = 256;
const SMALL_FILES: usize = 500;
const ROUNDS: usize = 10;

fn seq_write(dir: &Path) -> f64 {
    let buf = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut f = std::fs::File::create(dir.join("big")).expect("create");
    for _ in 0..FILE_MIB {
        f.write_all(&buf).expect("write");
    }
    drop(f);
    FILE_MIB as f64 / t.elapsed().as_secs_f64()
}

fn seq_read(dir: &Path) -> f64 {
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut f = std::fs::File::open(dir.join("big")).expect("open");
    let mut n = 0usize;
    loop {
        let got = f.read(&mut buf).expect("read");
        if got == 0 {
            break;
        }
        n += got;
    }
    assert_eq!(n, FILE_MIB << 20);
    FILE_MIB as f64 / t.elapsed().as_secs_f64()
}

fn small_open_stat_close(dir: &Path) -> f64 {
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for i in 0..SMALL_FILES {
            let f = std::fs::File::open(dir.join(format!("s{i}"))).expect("open");
            f.metadata().expect("fstat");
        }
    }
    (ROUNDS * SMALL_FILES) as f64 / t.elapsed().as_secs_f64()
}

fn stat_by_path(dir: &Path) -> f64 {
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for i in 0..SMALL_FILES {
            std::fs::metadata(dir.join(format!("s{i}"))).expect("stat");
        }
    }
    (ROUNDS * SMALL_FILES) as f64 / t.elapsed().as_secs_f64()
}

fn measure(dir: &Path) -> [f64; 4] {
    let w = seq_write(dir);
    let r = seq_read(dir);
    [w, r, small_open_stat_close(dir), stat_by_path(dir)]
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn passthrough_overhead_when_no_rule_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d: PathBuf = dir.path().to_path_buf();
    for i in 0..SMALL_FILES {
        std::fs::write(d.join(format!("s{i}")), b"small").expect("write");
    }
    let mut sleeper = Command::new("sleep")
        .arg("300")
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep");
    let pid = sleeper.id() as i32;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let start_time: u64 = stat
        .rsplit_once(')')
        .expect(")")
        .1
        .split_whitespace()
        .nth(19)
        .expect("f")
        .parse()
        .expect("n");
    let target = Target::Process {
        pid,
        start_time,
        name: "sleep".into(),
    };
    let src = format!(
        "apiVersion: havoc.dev/v1alpha1\nkind: IOChaos\nmetadata: {{name: b}}\nspec:\n  selector: {{pids: [1]}}\n  volumePath: {}\n  duration: 1m\n  action: fault\n  errno: EIO\n  path: never-matches/**\n",
        d.display()
    );
    let e = havoc_spec::parse_experiment(&src).expect("spec");
    let fault = havoc_faults::build(&e.spec.faults[0].spec);
    let ctx = Context {
        self_exe: PathBuf::from("/bin/false"),
        seed: 1,
        duration: Duration::from_secs(60),
    };

    // Alternate native and faulted runs so drift on the shared CPUs hits both alike.
    let (mut native, mut faulted) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        native.push(measure(&d));
        let mut inj = fault.inject(&target, &ctx).expect("inject");
        faulted.push(measure(&d));
        let e = inj.effect();
        assert_eq!(e.metrics["ops_matched"], 0.0, "{}", e.summary);
        inj.recover().expect("recover");
    }
    let med = |v: &[[f64; 4]], i: usize| {
        let mut x: Vec<f64> = v.iter().map(|m| m[i]).collect();
        x.sort_by(|a, b| a.partial_cmp(b).expect("num"));
        x[x.len() / 2]
    };
    println!("| measure (median of 3) | native | IOChaos, no rule matching | ratio |");
    println!("|---|---|---|---|");
    for (i, name) in [
        "sequential write, 1 MiB writes (MiB/s)",
        "sequential read, 1 MiB reads (MiB/s)",
        "small file open+fstat+close (/s)",
        "stat by path (/s)",
    ]
    .iter()
    .enumerate()
    {
        let (n, f) = (med(&native, i), med(&faulted, i));
        println!("| {name} | {n:.0} | {f:.0} | {:.0}% |", f * 100.0 / n);
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
