//! Compiles `bpf/rules.bpf.c` with clang into `$OUT_DIR/rules.bpf.o`, which `src/datapath.rs`
//! embeds. clang is a build requirement (Debian: `apt-get install clang llvm libbpf-dev`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = PathBuf::from("bpf/rules.bpf.c");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=HAVOC_CLANG");
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("rules.bpf.o");
    let clang = env::var("HAVOC_CLANG").unwrap_or_else(|_| "clang".to_owned());

    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "havoc-bpf: `{clang}` failed to compile {} ({s})",
            src.display()
        ),
        Err(e) => panic!(
            "havoc-bpf: cannot run `{clang}` to compile {} ({e}). Install clang, llvm and \
             libbpf-dev (Debian: `apt-get install clang llvm libbpf-dev`) or set HAVOC_CLANG.",
            src.display()
        ),
    }
}
