//! Finding the vDSO of a process and the functions it exports.
//!
//! The vDSO is a small ELF shared object the kernel maps into every process (`[vdso]` in
//! `/proc/PID/maps`); the C library calls its `clock_gettime`, `gettimeofday` and `time` instead
//! of making system calls. Its dynamic symbol table names those functions; [`Vdso::symbols`]
//! reads it with the `object` crate from the bytes of the mapping.

use object::read::elf::{ElfFile64, FileHeader};
use object::{Object, ObjectSymbol};

/// The vDSO mapping of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdsoMapping {
    pub start: u64,
    pub end: u64,
}

impl VdsoMapping {
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Finds the `[vdso]` mapping of `pid`; `Ok(None)` if it has none.
pub fn find(pid: i32) -> std::io::Result<Option<VdsoMapping>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(parse_maps(&maps))
}

/// The `[vdso]` line of a maps file.
pub fn parse_maps(maps: &str) -> Option<VdsoMapping> {
    maps.lines()
        .find(|l| l.split_whitespace().nth(5) == Some("[vdso]"))
        .and_then(|l| {
            let range = l.split_whitespace().next()?;
            let (a, b) = range.split_once('-')?;
            Some(VdsoMapping {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
            })
        })
}

/// A function exported by the vDSO: its offset from the start of the mapping and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdsoSymbol {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("the vDSO image is not a readable ELF object")]
pub struct ElfError(#[source] pub object::Error);

/// A vDSO image (the bytes of the mapping).
pub struct Vdso<'a> {
    image: &'a [u8],
}

impl<'a> Vdso<'a> {
    pub fn new(image: &'a [u8]) -> Self {
        Self { image }
    }

    /// The functions in the dynamic symbol table. The vDSO is linked at address 0, so a symbol's
    /// value is its offset in the mapping.
    pub fn symbols(&self) -> Result<Vec<VdsoSymbol>, ElfError> {
        let file = ElfFile64::<object::Endianness>::parse(self.image).map_err(ElfError)?;
        Ok(file
            .dynamic_symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.address() != 0)
            .filter_map(|s| {
                Some(VdsoSymbol {
                    name: s.name().ok()?.to_string(),
                    offset: s.address(),
                    size: s.size(),
                })
            })
            .collect())
    }

    /// Where the ELF object's own bytes end (segments, section contents and the section header
    /// table): the rest of the mapping is zero padding.
    pub fn used_len(&self) -> Result<usize, ElfError> {
        let file = ElfFile64::<object::Endianness>::parse(self.image).map_err(ElfError)?;
        let endian = file.endian();
        let hdr = file.elf_header();
        let mut end = hdr.e_shoff(endian) as usize
            + hdr.e_shnum(endian) as usize * hdr.e_shentsize(endian) as usize;
        for ph in file.elf_program_headers() {
            use object::read::elf::ProgramHeader;
            end = end.max((ph.p_offset(endian) + ph.p_filesz(endian)) as usize);
        }
        for sh in file.elf_section_table().iter() {
            use object::read::elf::SectionHeader;
            if sh.sh_type(endian) != object::elf::SHT_NOBITS {
                end = end.max((sh.sh_offset(endian) + sh.sh_size(endian)) as usize);
            }
        }
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_vdso() -> Vec<u8> {
        let m = find(std::process::id() as i32)
            .expect("read own maps")
            .expect("a vdso");
        crate::ptrace::read_mem(std::process::id() as i32, m.start, m.len()).expect("read vdso")
    }

    #[test]
    fn finds_clock_functions_and_free_tail_in_own_vdso() {
        let image = own_vdso();
        let v = Vdso::new(&image);
        let syms = v.symbols().expect("symbols");
        let cg = syms
            .iter()
            .find(|s| s.name == "__vdso_clock_gettime")
            .expect("__vdso_clock_gettime");
        assert!(cg.size > 0 && (cg.offset as usize) < image.len());
        let used = v.used_len().expect("used length");
        assert!(used <= image.len());
        assert!(
            image[used..].iter().all(|&b| b == 0),
            "bytes after the ELF object are padding"
        );
    }
}
