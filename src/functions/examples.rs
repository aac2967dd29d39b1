//! The example functions built into the binary, so the embedded default
//! configuration serves them from any working directory: a `[[function]]`
//! whose `module` is `builtin:<file>` (e.g. `builtin:checksum.wat`) is read
//! from here instead of the file system. The files are the ones in
//! `functions/` at build time.

use std::path::Path;

pub use crate::config::functions::{is_builtin, BUILTIN_MODULE_PREFIX as PREFIX};

/// File name and contents of every built-in example.
pub const EXAMPLES: &[(&str, &[u8])] = &[
    (
        "checksum.wat",
        include_bytes!("../../functions/checksum.wat"),
    ),
    (
        "classify.wat",
        include_bytes!("../../functions/classify.wat"),
    ),
    (
        "header_rewrite.wat",
        include_bytes!("../../functions/header_rewrite.wat"),
    ),
    (
        "ttl_decrement.wasm",
        include_bytes!("../../functions/ttl_decrement.wasm"),
    ),
];

/// The bytes of the built-in `module`; `Err` lists what exists.
pub fn read(module: &Path) -> Result<&'static [u8], String> {
    let name = module
        .to_str()
        .and_then(|s| s.strip_prefix(PREFIX))
        .unwrap_or_default();
    EXAMPLES
        .iter()
        .find(|(file, _)| *file == name)
        .map(|(_, bytes)| *bytes)
        .ok_or_else(|| {
            let known: Vec<String> = EXAMPLES
                .iter()
                .map(|(f, _)| format!("{PREFIX}{f}"))
                .collect();
            format!(
                "{} is not a built-in example; built-in are: {}",
                module.display(),
                known.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_found_by_name_and_others_are_refused() {
        assert!(is_builtin(Path::new("builtin:checksum.wat")));
        assert!(!is_builtin(Path::new("functions/checksum.wat")));
        let wat = read(Path::new("builtin:checksum.wat")).unwrap();
        assert_eq!(wat, std::fs::read("functions/checksum.wat").unwrap());
        let err = read(Path::new("builtin:nope.wat")).unwrap_err();
        assert!(err.contains("builtin:classify.wat"), "{err}");
    }
}
