//! A tiny OCI image built locally from Debian's `busybox-static`: no registry is reachable in CI,
//! so the testbed makes its own image. The archive is an OCI image layout in a tar (what
//! `ctr image import` takes), with one uncompressed layer, and its bytes depend only on the
//! busybox binary and the image name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Where `busybox-static` puts its binary; `HAVOC_BUSYBOX` overrides it.
const BUSYBOX_PATHS: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// Applets that must be in the image whatever `busybox --list-full` says (tests rely on them).
const REQUIRED_APPLETS: &[&str] = &["bin/sh", "bin/sleep", "usr/bin/nc", "bin/cat", "bin/ping"];

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Builds the OCI image archive `out` for the image reference `name` (e.g.
/// `docker.io/library/havoc-busybox:local`): a single layer with the static busybox in `/bin` and a
/// symlink for each of its applets (`sh`, `sleep`, `nc`, `ping`, `ip`, ...), plus a minimal `/etc`.
/// The same busybox and name always give the same bytes.
pub fn build_busybox_image(out: &Path, name: &str) -> anyhow::Result<()> {
    ensure!(
        !name.is_empty() && !name.contains(char::is_whitespace),
        "image name {name:?} is not a valid reference: expected e.g. docker.io/library/havoc-busybox:local"
    );
    let busybox = find_busybox()?;
    let binary = std::fs::read(&busybox)
        .with_context(|| format!("failed to read busybox at {}", busybox.display()))?;
    ensure_static_elf(&busybox, &binary)?;
    let applets = list_applets(&busybox)?;
    let archive = oci_archive(&binary, &applets, name)?;
    std::fs::write(out, archive)
        .with_context(|| format!("failed to write the image archive {}", out.display()))
}

fn find_busybox() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("HAVOC_BUSYBOX") {
        return Ok(PathBuf::from(path));
    }
    BUSYBOX_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "no busybox found at {}: install Debian's busybox-static (or set HAVOC_BUSYBOX)",
                BUSYBOX_PATHS.join(" or ")
            )
        })
}

/// A dynamically linked busybox would not run in an image that has no libc: refuse it early with a
/// clear message instead of an obscure "no such file or directory" from runc.
fn ensure_static_elf(path: &Path, elf: &[u8]) -> anyhow::Result<()> {
    const PT_INTERP: u32 = 3;
    let bad = || {
        format!(
            "{} is not a 64-bit little-endian ELF executable",
            path.display()
        )
    };
    ensure!(elf.len() >= 64 && elf.starts_with(b"\x7fELF"), bad());
    ensure!(elf[4] == 2 && elf[5] == 1, bad());
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[32..40].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let Some(ph) = elf.get(off..off + 4) else {
            bail!(bad());
        };
        if u32::from_le_bytes(ph.try_into().expect("4 bytes")) == PT_INTERP {
            bail!(
                "{} is dynamically linked and cannot run in a libc-less image: install Debian's busybox-static",
                path.display()
            );
        }
    }
    Ok(())
}

/// The applet paths relative to `/` (`bin/sh`, `usr/bin/nc`, ...), sorted.
fn list_applets(busybox: &Path) -> anyhow::Result<BTreeSet<String>> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("failed to run {} --list-full", busybox.display()))?;
    ensure!(
        out.status.success(),
        "{} --list-full failed: {}",
        busybox.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let mut applets: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        // Only plain relative paths: a name with `..` would escape the image root.
        .filter(|l| !l.is_empty() && l.split('/').all(|c| !c.is_empty() && c != ".."))
        .filter(|l| l != "bin/busybox")
        .collect();
    applets.extend(REQUIRED_APPLETS.iter().map(|s| s.to_string()));
    Ok(applets)
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> anyhow::Result<()> {
    let mut h = header(tar::EntryType::Directory, mode, 0);
    tar.append_data(&mut h, path, std::io::empty())
        .with_context(|| format!("failed to add directory {path} to the tar"))
}

fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> anyhow::Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    tar.append_data(&mut h, path, data)
        .with_context(|| format!("failed to add file {path} to the tar"))
}

/// The layer: directories first (parents before children), then files, then applet symlinks.
fn layer_tar(busybox: &[u8], applets: &BTreeSet<String>) -> anyhow::Result<Vec<u8>> {
    let mut dirs: BTreeSet<String> = [
        "bin", "dev", "etc", "proc", "root", "sys", "tmp", "var", "run",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for applet in applets {
        let mut parent = Path::new(applet).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
    }
    let mut tar = tar::Builder::new(Vec::new());
    for dir in &dirs {
        let mode = if dir == "tmp" { 0o1777 } else { 0o755 };
        append_dir(&mut tar, &format!("{dir}/"), mode)?;
    }
    append_file(&mut tar, "bin/busybox", 0o755, busybox)?;
    append_file(
        &mut tar,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n",
    )?;
    append_file(&mut tar, "etc/group", 0o644, b"root:x:0:\n")?;
    append_file(&mut tar, "etc/hosts", 0o644, b"127.0.0.1 localhost\n")?;
    for applet in applets {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, applet, "/bin/busybox")
            .with_context(|| format!("failed to add symlink {applet} to the tar"))?;
    }
    tar.into_inner().context("failed to finish the layer tar")
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn oci_archive(busybox: &[u8], applets: &BTreeSet<String>, name: &str) -> anyhow::Result<Vec<u8>> {
    let layer = layer_tar(busybox, applets)?;
    archive_of(
        layer,
        json!({
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
        }),
        name,
    )
}

/// An OCI image layout in a tar: one layer, an image config with `container_config`.
fn archive_of(
    layer: Vec<u8>,
    container_config: serde_json::Value,
    name: &str,
) -> anyhow::Result<Vec<u8>> {
    let layer_digest = format!("sha256:{}", sha256_hex(&layer));
    let config = serde_json::to_vec(&json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": container_config,
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))?;
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer.len() }],
    }))?;
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
    let tag = name
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.contains('/'))
        .unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": { "architecture": oci_arch(), "os": "linux" },
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;

    let mut tar = tar::Builder::new(Vec::new());
    append_file(
        &mut tar,
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    append_file(&mut tar, "index.json", 0o644, &index)?;
    append_dir(&mut tar, "blobs/", 0o755)?;
    append_dir(&mut tar, "blobs/sha256/", 0o755)?;
    for blob in [&layer, &config, &manifest] {
        append_file(
            &mut tar,
            &format!("blobs/sha256/{}", sha256_hex(blob)),
            0o644,
            blob,
        )?;
    }
    tar.into_inner()
        .context("failed to finish the image archive")
}

/// What [`build_havoc_image`] put in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HavocImage {
    /// Size of the stripped `havoc` binary in the image.
    pub binary_bytes: u64,
    /// Whether the binary is statically linked (no libraries in the image).
    pub is_static: bool,
    /// Shared libraries copied from the host, by their path in the image (empty when static).
    pub libraries: Vec<String>,
    /// Size of the archive.
    pub archive_bytes: u64,
}

/// Builds the OCI image archive `out` for `name` (e.g. `havoc.local/havoc:dev`) holding the
/// `havoc` binary at `/havoc` (the entrypoint), stripped of symbols and debug info with
/// binutils' `strip`, and an empty `/tmp` and `/var/lib/havoc`.
///
/// A statically linked binary (`RUSTFLAGS='-C target-feature=+crt-static'`) goes in alone. A
/// glibc-linked one (the default `cargo build --release`) gets the libraries `ldd` names,
/// copied from this host at the same paths, so that it starts in an image without a
/// distribution; such an image runs where this host's glibc is acceptable (same architecture),
/// and its libraries are listed in the result.
pub fn build_havoc_image(out: &Path, name: &str, binary: &Path) -> anyhow::Result<HavocImage> {
    ensure!(
        !name.is_empty() && !name.contains(char::is_whitespace),
        "image name {name:?} is not a valid reference: expected e.g. havoc.local/havoc:dev"
    );
    let work = tempfile::tempdir().context("failed to make a temporary directory")?;
    let stripped = work.path().join("havoc");
    let st = Command::new("strip")
        .args(["--strip-all", "-o"])
        .arg(&stripped)
        .arg(binary)
        .output()
        .context("failed to run strip (install binutils)")?;
    ensure!(
        st.status.success(),
        "strip {} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&st.stderr).trim()
    );
    let elf = std::fs::read(&stripped)
        .with_context(|| format!("failed to read {}", stripped.display()))?;
    let is_static = ensure_static_elf(&stripped, &elf).is_ok();
    let libraries = if is_static {
        Vec::new()
    } else {
        shared_libraries(binary)?
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs: BTreeSet<String> = ["tmp", "var", "var/lib", "var/lib/havoc", "etc"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for lib in &libraries {
        let mut parent = Path::new(lib.trim_start_matches('/')).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
    }
    for dir in &dirs {
        let mode = if dir == "tmp" { 0o1777 } else { 0o755 };
        append_dir(&mut tar, &format!("{dir}/"), mode)?;
    }
    append_file(&mut tar, "havoc", 0o755, &elf)?;
    append_file(
        &mut tar,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/:/havoc\nnonroot:x:65532:65532::/:/havoc\n",
    )?;
    append_file(
        &mut tar,
        "etc/group",
        0o644,
        b"root:x:0:\nnonroot:x:65532:\n",
    )?;
    for lib in &libraries {
        // Read through symlinks: the image holds the file at every path the loader uses.
        let data = std::fs::read(lib).with_context(|| format!("failed to read library {lib}"))?;
        append_file(&mut tar, lib.trim_start_matches('/'), 0o755, &data)?;
    }
    let layer = tar.into_inner().context("failed to finish the layer tar")?;
    let archive = archive_of(
        layer,
        json!({
            "Entrypoint": ["/havoc"],
            "Cmd": ["--help"],
            "WorkingDir": "/",
        }),
        name,
    )?;
    std::fs::write(out, &archive)
        .with_context(|| format!("failed to write the image archive {}", out.display()))?;
    Ok(HavocImage {
        binary_bytes: elf.len() as u64,
        is_static,
        libraries,
        archive_bytes: archive.len() as u64,
    })
}

/// The absolute paths of the shared libraries (and the loader) `ldd` lists for `binary`.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("failed to run ldd")?;
    ensure!(
        out.status.success(),
        "ldd {} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let mut libs: BTreeSet<String> = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            ensure!(
                p.split('/').all(|c| c != ".."),
                "ldd named a library path with `..`: {p}"
            );
            libs.insert(p.to_string());
        }
    }
    ensure!(
        !libs.is_empty(),
        "{} is dynamically linked but ldd names no library",
        binary.display()
    );
    Ok(libs.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut tar = tar::Archive::new(archive);
        tar.entries()
            .expect("entries")
            .map(|e| {
                let mut e = e.expect("entry");
                let path = e.path().expect("path").to_string_lossy().into_owned();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).expect("read entry");
                (path, data)
            })
            .collect()
    }

    #[test]
    fn archive_is_deterministic_and_blobs_match_their_digests() {
        let applets: BTreeSet<String> = ["bin/sh", "usr/bin/nc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a =
            oci_archive(b"fake busybox", &applets, "docker.io/library/t:local").expect("archive a");
        let b =
            oci_archive(b"fake busybox", &applets, "docker.io/library/t:local").expect("archive b");
        assert_eq!(a, b, "same inputs must give the same bytes");
        let c = oci_archive(b"other busybox", &applets, "docker.io/library/t:local")
            .expect("archive c");
        assert_ne!(a, c);

        let files = entries(&a);
        let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            &names[..4],
            &["oci-layout", "index.json", "blobs/", "blobs/sha256/"]
        );
        for (path, data) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                assert_eq!(
                    hex,
                    sha256_hex(data),
                    "blob {path} is stored under its digest"
                );
            }
        }
        let index: serde_json::Value = serde_json::from_slice(
            &files
                .iter()
                .find(|(p, _)| p == "index.json")
                .expect("index")
                .1,
        )
        .expect("index json");
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "docker.io/library/t:local"
        );
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            "local"
        );
        let manifest_hex = m["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:");
        let manifest = &files
            .iter()
            .find(|(p, _)| p.ends_with(manifest_hex))
            .expect("manifest blob")
            .1;
        assert_eq!(m["size"], manifest.len());
    }

    #[test]
    fn layer_has_busybox_parents_and_symlinks() {
        let applets: BTreeSet<String> = ["bin/sh", "usr/sbin/ip"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let layer = layer_tar(b"BB", &applets).expect("layer");
        let mut tar = tar::Archive::new(&layer[..]);
        let mut seen = Vec::new();
        for e in tar.entries().expect("entries") {
            let e = e.expect("entry");
            let path = e.path().expect("path").to_string_lossy().into_owned();
            if path == "usr/sbin/ip" || path == "bin/sh" {
                assert_eq!(e.header().entry_type(), tar::EntryType::Symlink);
                let target = e.link_name().expect("link").expect("has target");
                assert_eq!(target.to_string_lossy(), "/bin/busybox");
            }
            if path == "tmp/" {
                assert_eq!(e.header().mode().expect("mode"), 0o1777);
            }
            seen.push(path);
        }
        for want in [
            "usr/",
            "usr/sbin/",
            "bin/busybox",
            "etc/passwd",
            "bin/sh",
            "usr/sbin/ip",
        ] {
            assert!(
                seen.iter().any(|p| p == want),
                "{want} missing from {seen:?}"
            );
        }
        let usr = seen.iter().position(|p| p == "usr/").expect("usr/");
        let ip = seen.iter().position(|p| p == "usr/sbin/ip").expect("ip");
        assert!(usr < ip, "parents come before children");
    }

    #[test]
    fn dynamic_elf_is_refused_with_the_package_to_install() {
        // A minimal ELF64 header with one PT_INTERP program header.
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&3u32.to_le_bytes());
        let err = ensure_static_elf(Path::new("/x/busybox"), &elf).expect_err("dynamic refused");
        assert!(err.to_string().contains("busybox-static"), "{err}");
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        ensure_static_elf(Path::new("/x/busybox"), &elf).expect("static accepted");
        let err = ensure_static_elf(Path::new("/x/sh"), b"#!/bin/sh\n").expect_err("not elf");
        assert!(err.to_string().contains("not a 64-bit"), "{err}");
    }
}
