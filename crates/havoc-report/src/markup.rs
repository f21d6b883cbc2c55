//! A small writer of well-formed markup: every element is closed, every attribute quoted, every
//! text escaped, so the page parses as XML (XHTML) as well as HTML5.
//!
//! Report text is arbitrary (a probe's error can hold anything a command printed), so escaping
//! is not left to call sites: text and attribute values only enter the page through here.

use std::fmt::Write as _;

/// HTML elements that have no content and no end tag in HTML5; written as `<br/>`.
const VOID: &[&str] = &["br", "col", "hr", "img", "meta", "wbr"];

/// SVG elements, which may be written self-closed (`<rect/>`) in HTML5 as in XML.
const SVG: &[&str] = &["circle", "line", "path", "polyline", "rect"];

pub(crate) struct Markup {
    buf: String,
    open: Vec<&'static str>,
}

impl Markup {
    pub fn new() -> Markup {
        Markup {
            buf: String::with_capacity(64 * 1024),
            open: Vec::new(),
        }
    }

    /// Raw markup written by this crate (the doctype, the style sheet): never report text.
    pub fn raw(&mut self, s: &'static str) -> &mut Self {
        self.buf.push_str(s);
        self
    }

    fn start_tag(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.buf.push('<');
        self.buf.push_str(tag);
        for (name, value) in attrs {
            let _ = write!(self.buf, " {name}=\"");
            escape_into(&mut self.buf, value);
            self.buf.push('"');
        }
    }

    /// `<tag attrs>`; closed by [`Markup::close`].
    pub fn open(&mut self, tag: &'static str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start_tag(tag, attrs);
        self.buf.push('>');
        self.open.push(tag);
        self
    }

    /// Closes the innermost open element.
    pub fn close(&mut self) -> &mut Self {
        let tag = self.open.pop().expect("close() matches an open()");
        let _ = write!(self.buf, "</{tag}>");
        self
    }

    /// `<tag attrs>text</tag>`.
    pub fn elem(&mut self, tag: &'static str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.open(tag, attrs);
        self.text(text);
        self.close()
    }

    /// `<tag attrs/>`, for void HTML elements and SVG shapes only (HTML5 ignores the `/` on any
    /// other element and would leave it open).
    pub fn empty(&mut self, tag: &'static str, attrs: &[(&str, &str)]) -> &mut Self {
        debug_assert!(
            VOID.contains(&tag) || SVG.contains(&tag),
            "<{tag}/> is not self-closing in HTML5"
        );
        self.start_tag(tag, attrs);
        self.buf.push_str("/>");
        self
    }

    pub fn text(&mut self, s: &str) -> &mut Self {
        escape_into(&mut self.buf, s);
        self
    }

    pub fn finish(self) -> String {
        assert!(self.open.is_empty(), "unclosed elements: {:?}", self.open);
        self.buf
    }
}

/// Escapes `s` for text and for double- or single-quoted attribute values. Characters that
/// XML 1.0 forbids even as references (most C0 controls, U+FFFE, U+FFFF) become U+FFFD.
pub(crate) fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{fffe}' || c == '\u{ffff}' => {
                out.push('\u{fffd}')
            }
            c => out.push(c),
        }
    }
}

/// A coordinate for SVG: two decimals at most, no `-0`.
pub(crate) fn coord(x: f64) -> String {
    let r = (x * 100.0).round() / 100.0;
    if r == 0.0 {
        "0".into()
    } else {
        let s = format!("{r:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A measured number for people: integers as such, others with four significant digits.
pub(crate) fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return format!("{x:.0}");
    }
    let digits = if x.abs() >= 1.0 {
        (x.abs().log10().floor() as i32 + 1).max(1)
    } else {
        0
    };
    let decimals = (4 - digits).clamp(1, 6) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A duration in seconds for people: `850 ms`, `2.04 s`, `3 min 20 s`.
pub(crate) fn seconds(s: f64) -> String {
    if s.abs() < 1.0 {
        format!("{} ms", num(s * 1000.0))
    } else if s.abs() < 120.0 {
        format!("{s:.2} s")
    } else {
        let whole = s.round() as i64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

/// Milliseconds for people: `0.16 ms`, `5.5 ms`, `1,026 ms` is written `1026 ms`.
pub(crate) fn millis(ms: f64) -> String {
    if ms.abs() >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms.abs() >= 1.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// Bytes in IEC units: `256.0 MiB`.
pub(crate) fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_characters_xml_forbids() {
        let mut s = String::new();
        escape_into(&mut s, "<a href=\"x\">'&'</a>\u{0}\u{1b}[31m\n");
        assert_eq!(
            s,
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;\u{fffd}\u{fffd}[31m\n"
        );
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(num(2.0), "2");
        assert_eq!(num(29.870391692035973), "29.87");
        assert_eq!(num(0.15565199999999998), "0.1557");
        assert_eq!(num(1025.7453050000001), "1025.7");
        assert_eq!(seconds(1.9949798520000002), "1.99 s");
        assert_eq!(seconds(0.5), "500 ms");
        assert_eq!(millis(1.339233), "1.3 ms");
        assert_eq!(bytes(268435456.0), "256.0 MiB");
        assert_eq!(coord(-0.001), "0");
        assert_eq!(coord(12.5), "12.5");
    }
}
