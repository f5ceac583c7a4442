//! Checking a component against the `sessiond:plugin` world before it runs:
//! the right world and version, known imports only, granted capabilities only.

use std::fmt;

use serde::{Deserialize, Serialize};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The package version this host implements.
pub const WIT_PACKAGE: &str = "sessiond:plugin";
pub const WIT_VERSION: &str = "0.2.0";

/// What changed since each older version, for the refusal of a component
/// built against it.
fn changed_since(version: &str) -> &'static str {
    match version {
        "0.1.0" => {
            ": rebuild it against the 0.2 SDK (sdk/rust or sdk/python). In 0.2 the session \
             is passed as one byte list (fields separated by NUL bytes) instead of a record, \
             a hook's changes as one JSON object, `on-session-start` takes no separate \
             client argument, verdicts gained `allow-unchanged`, a denial may carry the \
             plugin's state, changes may end the session (`end`), and hooks see the idle \
             and absolute deadlines separately"
        }
        _ => "",
    }
}

/// A host capability that a plugin may import when the config grants it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Log,
    Clock,
    Kv,
    Sessions,
    Audit,
}

impl Capability {
    pub const ALL: [Capability; 5] = [
        Capability::Log,
        Capability::Clock,
        Capability::Kv,
        Capability::Sessions,
        Capability::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Clock => "clock",
            Capability::Kv => "kv",
            Capability::Sessions => "sessions",
            Capability::Audit => "audit",
        }
    }

    fn from_interface(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a file cannot be used as a plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ComponentError {
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component: build it as a component (wasm32-wasip2 target, or `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("the component does not compile: {0}")]
    Invalid(String),
    #[error(
        "the component was built for {WIT_PACKAGE}@{found}; this host implements {WIT_PACKAGE}@{WIT_VERSION}{}",
        changed_since(found)
    )]
    WrongVersion { found: String },
    #[error(
        "the component does not export {WIT_PACKAGE}/hooks@{WIT_VERSION}: it was built for another world (exports: {exports})"
    )]
    WrongWorld { exports: String },
    #[error("the component imports {0}, which this host does not provide")]
    UnknownImport(String),
    #[error("the component imports the `{0}` capability, which the config does not grant it")]
    NotGranted(Capability),
}

/// Rejects what is not a component before compiling it, with a clear reason.
pub fn check_header(bytes: &[u8]) -> Result<(), ComponentError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(ComponentError::NotWasm);
    }
    // Bytes 4..8 hold the version and layer: 1,0,0,0 for a core module;
    // layer 1 (bytes 6..8 = 1,0) for a component.
    if bytes[6..8] == [0, 0] {
        return Err(ComponentError::CoreModule);
    }
    Ok(())
}

/// Checks the component's imports and exports; returns the capabilities it
/// imports.
pub fn check_world(
    engine: &Engine,
    component: &Component,
) -> Result<Vec<Capability>, ComponentError> {
    let ty = component.component_type();
    let mut caps = Vec::new();
    for (name, _) in ty.imports(engine) {
        if let Some(rest) = name.strip_prefix(&format!("{WIT_PACKAGE}/")) {
            let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
            if version != WIT_VERSION {
                return Err(ComponentError::WrongVersion {
                    found: version.to_string(),
                });
            }
            if iface == "types" {
                continue;
            }
            match Capability::from_interface(iface) {
                Some(cap) => caps.push(cap),
                None => return Err(ComponentError::UnknownImport(name.to_string())),
            }
        } else if !name.starts_with("wasi:") {
            return Err(ComponentError::UnknownImport(name.to_string()));
        }
    }
    let hooks = format!("{WIT_PACKAGE}/hooks@{WIT_VERSION}");
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    if !exports.contains(&hooks) {
        if let Some(other) = exports
            .iter()
            .find(|e| e.starts_with(&format!("{WIT_PACKAGE}/hooks@")))
        {
            return Err(ComponentError::WrongVersion {
                found: other
                    .trim_start_matches(&format!("{WIT_PACKAGE}/hooks@"))
                    .to_string(),
            });
        }
        return Err(ComponentError::WrongWorld {
            exports: if exports.is_empty() {
                "none".into()
            } else {
                exports.join(", ")
            },
        });
    }
    caps.sort();
    caps.dedup();
    Ok(caps)
}

/// Fails with the first imported capability that is not granted.
pub fn check_grants(imported: &[Capability], granted: &[Capability]) -> Result<(), ComponentError> {
    match imported.iter().find(|c| !granted.contains(c)) {
        Some(c) => Err(ComponentError::NotGranted(*c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_for_0_1_is_told_what_changed() {
        let e = ComponentError::WrongVersion {
            found: "0.1.0".into(),
        }
        .to_string();
        assert!(
            e.starts_with(
                "the component was built for sessiond:plugin@0.1.0; \
                 this host implements sessiond:plugin@0.2.0: rebuild it against the 0.2 SDK"
            ),
            "{e}"
        );
        assert!(
            e.contains("one byte list") && e.contains("idle and absolute"),
            "{e}"
        );
        let e = ComponentError::WrongVersion {
            found: "0.9.0".into(),
        }
        .to_string();
        assert!(e.ends_with("implements sessiond:plugin@0.2.0"), "{e}");
    }
}
