//! Measures the testbed: containerd start, image build, image import, container start and the
//! teardown, over a few rounds. Run as root: `cargo run -p havoc-testbed --example timing`.

use std::time::{Duration, Instant};

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<24} n={:<3} median {:>7.1} ms  min {:>7.1} ms  max {:>7.1} ms",
        v.len(),
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1])
    );
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(5);
    let (mut start, mut build, mut import, mut run, mut teardown) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let dir = tempfile::tempdir()?;
        let t = Instant::now();
        havoc_testbed::build_busybox_image(&dir.path().join("img.tar"), havoc_testbed::IMAGE)?;
        build.push(t.elapsed());

        let t = Instant::now();
        let ctrd = havoc_testbed::Containerd::start()?;
        start.push(t.elapsed());
        let t = Instant::now();
        ctrd.ensure_image()?;
        import.push(t.elapsed());
        let mut containers = Vec::new();
        for i in 0..3 {
            let t = Instant::now();
            containers.push(ctrd.run(&format!("timing-{i}"), &["sleep", "3600"])?);
            run.push(t.elapsed());
        }
        let t = Instant::now();
        drop(containers);
        drop(ctrd);
        teardown.push(t.elapsed());
    }
    summary("containerd start", start);
    summary("image build (Rust)", build);
    summary("image build + import", import);
    summary("container start", run);
    summary("teardown (3 containers)", teardown);
    Ok(())
}
