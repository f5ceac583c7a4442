//! `sessiond plugin check` and `sessiond plugin run`: validate a component and
//! run one hook through the real runtime, with a throwaway in-memory store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::runtime::{
    BreakerSettings, Call, CallReport, Capability, EndInfo, EngineSettings, FailureKind,
    HOOK_NAMES, HostStores, LimitOverrides, LoadedPlugin, OnError, PluginFailure, PluginSession,
    PluginSpec, Runtime, UpdateVerdict, Verdict, check_changes, check_reply, cli_support as rt,
};
use crate::session::{ClientInfo, EndReason, SessionRecord, now_ms};
use crate::store::memory::MemoryStore;

// Parsed once per process: the size difference between variants is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub(super) enum PluginCommand {
    /// Validate a component against the sessiond:plugin world and print its
    /// name, version, hooks and imported capabilities.
    Check {
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Run one hook through the real runtime and print one JSON object.
    /// Exit code: 0 allow/ok, 1 deny or plugin error, 2 limit or trap.
    Run {
        /// The component (.wasm).
        file: PathBuf,
        /// on-session-start, on-session-update, on-session-end, on-event,
        /// on-message or on-list-active.
        hook: String,
        /// A JSON file describing the session (user, roles, data, state,
        /// client, ...). Defaults to an anonymous session with empty data.
        #[arg(long)]
        session: Option<PathBuf>,
        /// The hook's JSON payload: the event or message payload, the proposed
        /// change for on-session-update ({"data_patch": {...}, "roles": [...]}),
        /// or the summaries for on-list-active.
        #[arg(long)]
        payload: Option<String>,
        /// The event name for on-event.
        #[arg(long, default_value = "custom")]
        event: String,
        /// The handler name for on-message.
        #[arg(long, default_value = "default")]
        handler: String,
        /// The end reason for on-session-end.
        #[arg(long, default_value = "logout")]
        reason: String,
        /// A configuration attribute for init, as key=value (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Fuel budget for the call.
        #[arg(long)]
        fuel: Option<u64>,
        /// Wall-clock deadline in milliseconds.
        #[arg(long)]
        deadline_ms: Option<u64>,
        /// Memory cap in MiB.
        #[arg(long)]
        memory_mib: Option<u64>,
    },
    /// Upload a component to a tenant through a server's operator API and
    /// print its sha256 (first line), name, version, hooks and imports.
    Push(super::operator::PushArgs),
}

pub(super) fn run(cmd: PluginCommand) -> ExitCode {
    let result = match cmd {
        PluginCommand::Check { file } => check(file),
        PluginCommand::Run { .. } => run_hook(cmd),
        PluginCommand::Push(args) => Ok(super::operator::push(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn local_runtime() -> Result<Runtime> {
    let settings = EngineSettings {
        max_instances: 4,
        cache_dir: local_cache_dir(),
        ..EngineSettings::default()
    };
    Runtime::new(settings, HostStores::of(Arc::new(MemoryStore::new())))
}

/// Where the CLI caches precompiled components: `$SESSIOND_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/sessiond`, else `~/.cache/sessiond`.
fn local_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SESSIOND_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("sessiond"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sessiond"))
}

fn check(file: PathBuf) -> Result<ExitCode> {
    let tokio = tokio_runtime()?;
    let runtime = local_runtime()?;
    match tokio.block_on(runtime.inspect(&file)) {
        Ok(info) => {
            println!("{}: ok", file.display());
            println!("  name:         {}", info.name);
            println!("  version:      {}", info.version);
            println!("  world:        {}", info.world);
            println!("  hooks:        {}", info.hooks.join(", "));
            let caps: Vec<&str> = info.capabilities.iter().map(|c| c.as_str()).collect();
            println!(
                "  capabilities: {}",
                if caps.is_empty() {
                    "none".into()
                } else {
                    caps.join(", ")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            Ok(ExitCode::from(1))
        }
    }
}

/// The session a `--session` file describes. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SessionFile {
    id: Option<String>,
    tenant: Option<String>,
    user: Option<String>,
    roles: Vec<String>,
    data: Map<String, Value>,
    /// This plugin's private state.
    state: Option<Map<String, Value>>,
    client: ClientInfo,
    created_at: Option<u64>,
    last_seen_at: Option<u64>,
    ttl_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    version: Option<u64>,
}

const PLUGIN_NAME: &str = "plugin";

fn session_record(file: Option<&PathBuf>) -> Result<SessionRecord> {
    let s: SessionFile = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid session file", path.display()))?
        }
        None => SessionFile::default(),
    };
    let now = now_ms();
    let created = s.created_at.unwrap_or(now);
    let mut record = SessionRecord {
        token_hash: "0".repeat(64),
        public_id: s.id.unwrap_or_else(|| "local-session".into()),
        tenant: s.tenant.unwrap_or_else(|| "local".into()),
        user: s.user,
        roles: s.roles,
        created_at: created,
        last_seen_at: s.last_seen_at.unwrap_or(now),
        absolute_expires_at: created + s.ttl_seconds.unwrap_or(3600) * 1000,
        idle_timeout_ms: s.idle_timeout_seconds.unwrap_or(900) * 1000,
        version: s.version.unwrap_or(1),
        client: s.client,
        data: s.data,
        plugin_state: Default::default(),
        idle_warned_at: None,
    };
    if let Some(state) = s.state {
        record
            .plugin_state
            .insert(PLUGIN_NAME.into(), Value::Object(state));
    }
    Ok(record)
}

fn parse_config(pairs: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--config {p:?}: expected KEY=VALUE"),
        })
        .collect()
}

fn run_hook(cmd: PluginCommand) -> Result<ExitCode> {
    let PluginCommand::Run {
        file,
        hook,
        session,
        payload,
        event,
        handler,
        reason,
        config,
        fuel,
        deadline_ms,
        memory_mib,
    } = cmd
    else {
        unreachable!("run_hook is only called for `plugin run`")
    };
    let payload: Value = match &payload {
        Some(text) => serde_json::from_str(text).context("--payload is not valid JSON")?,
        None => Value::Null,
    };
    let record = session_record(session.as_ref())?;
    let spec = PluginSpec {
        name: PLUGIN_NAME.into(),
        path: file.clone(),
        config: parse_config(&config)?,
        grants: Capability::ALL.to_vec(),
        limits: LimitOverrides {
            fuel,
            deadline_ms,
            memory_mib,
            ..LimitOverrides::default()
        },
        on_error: OnError::Deny,
        instance_reuse: false,
        circuit: BreakerSettings {
            min_calls: 0,
            ..BreakerSettings::default()
        },
    };
    let tokio = tokio_runtime()?;
    let runtime = local_runtime()?;
    let plugin = match tokio.block_on(runtime.load(&record.tenant, &spec)) {
        Ok(p) => p,
        Err(e) => {
            let out = json!({
                "hook": hook,
                "outcome": "load-error",
                "message": e.to_string(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(ExitCode::from(2));
        }
    };
    let out = tokio.block_on(call_hook(
        &plugin, &hook, &record, &payload, &event, &handler, &reason,
    ))?;
    println!("{}", serde_json::to_string_pretty(&out.0)?);
    Ok(ExitCode::from(out.1))
}

/// Runs the hook and returns the JSON to print with the exit code.
async fn call_hook(
    plugin: &LoadedPlugin,
    hook: &str,
    record: &SessionRecord,
    payload: &Value,
    event: &str,
    handler: &str,
    reason: &str,
) -> Result<(Value, u8)> {
    let session = PluginSession::new(record, PLUGIN_NAME);
    let mut extra = Map::new();
    let implemented = plugin.description.hooks.contains(&hook);
    if !implemented && HOOK_NAMES.contains(&hook) {
        bail!(
            "the plugin does not implement {hook} (it implements: {})",
            plugin.description.hooks.join(", ")
        );
    }
    let (outcome, report) = match hook {
        "on-session-start" => {
            let call = plugin.on_session_start(&session).await;
            verdict(checked(call, |v| verdict_changes(v, false)), &mut extra)
        }
        "on-event" => {
            extra.insert("event".into(), json!(event));
            let call = plugin.on_event(&session, event, &payload.to_string()).await;
            verdict(checked(call, |v| verdict_changes(v, true)), &mut extra)
        }
        "on-session-update" => {
            let proposed = rt::proposed_changes(payload)?;
            let call = plugin.on_session_update(&session, &proposed).await;
            let call = checked(call, |v| match v {
                UpdateVerdict::Rewrite(changes) => check_changes(changes, true).map(drop),
                _ => Ok(()),
            });
            finish(call, &mut extra, |v, extra| {
                rt::update_verdict_json(v, extra)
            })
        }
        "on-session-end" => {
            let reason: EndReason = serde_json::from_value(json!(reason))
                .with_context(|| format!("--reason {reason:?}: expected logout, expired, idle-timeout, revoked or evicted"))?;
            let end = EndInfo {
                reason,
                end_id: "local-end-1".into(),
                ended_at: now_ms(),
            };
            finish(
                plugin.on_session_end(&session, &end).await,
                &mut extra,
                |_, _| "ok",
            )
        }
        "on-message" => {
            extra.insert("handler".into(), json!(handler));
            let call = plugin
                .on_message(&session, handler, &payload.to_string())
                .await;
            let call = checked(call, |r| {
                check_reply(&r.reply)?;
                check_changes(&r.changes, true).map(drop)
            });
            finish(call, &mut extra, |r, extra| {
                extra.insert(
                    "reply".into(),
                    serde_json::from_str(&r.reply).unwrap_or(Value::String(r.reply.clone())),
                );
                extra.insert("changes".into(), rt::changes_json(&r.changes));
                "ok"
            })
        }
        "on-list-active" => {
            let summaries = if payload.is_null() {
                vec![record.summary()]
            } else {
                serde_json::from_value(payload.clone())
                    .context("--payload for on-list-active must be a list of session summaries")?
            };
            let user = record.user.clone().unwrap_or_default();
            let call = plugin.on_list_active(&user, &summaries).await;
            let call = checked(call, |list| list.clone().into_checked().map(drop));
            finish(call, &mut extra, |list, extra| {
                extra.insert("sessions".into(), rt::summaries_json(list));
                "ok"
            })
        }
        other => bail!(
            "unknown hook {other:?}: expected one of {}",
            HOOK_NAMES.join(", ")
        ),
    };
    let mut out = Map::new();
    out.insert(
        "plugin".into(),
        json!({
            "name": plugin.description.name,
            "version": plugin.description.version,
        }),
    );
    out.insert("hook".into(), json!(hook));
    out.insert("outcome".into(), json!(outcome));
    out.extend(extra);
    out.insert("logs".into(), json!(report.logs));
    out.insert("audit".into(), json!(report.audit));
    out.insert("fuel_consumed".into(), json!(report.fuel_consumed));
    out.insert("wall_us".into(), json!(report.wall_us));
    out.insert("peak_memory_bytes".into(), json!(report.peak_memory_bytes));
    if !report.output.is_empty() {
        out.insert("output".into(), json!(report.output));
    }
    let code = match outcome {
        "allow" | "ok" | "accept" | "rewrite" => 0,
        "deny" | "reject" | "error" => 1,
        _ => 2,
    };
    Ok((Value::Object(out), code))
}

/// `call`, failed with `invalid-output` when `check` finds its result
/// unusable: the server checks every result so before using it.
fn checked<R>(mut call: Call<R>, check: impl FnOnce(&R) -> Result<(), String>) -> Call<R> {
    if let Ok(value) = &call.result
        && let Err(message) = check(value)
    {
        call.result = Err(PluginFailure {
            plugin: PLUGIN_NAME.into(),
            kind: FailureKind::InvalidOutput,
            message,
            backtrace: None,
            output: None,
            store_unavailable: false,
        });
    }
    call
}

/// The changes of an allowing verdict, checked as the chain checks them.
fn verdict_changes(v: &Verdict, may_end: bool) -> Result<(), String> {
    match v {
        Verdict::Allow(changes) => check_changes(changes, may_end).map(drop),
        Verdict::Deny(_) => Ok(()),
    }
}

fn verdict(call: Call<Verdict>, extra: &mut Map<String, Value>) -> (&'static str, CallReport) {
    finish(call, extra, rt::verdict_json)
}

fn finish<R>(
    call: Call<R>,
    extra: &mut Map<String, Value>,
    ok: impl FnOnce(&R, &mut Map<String, Value>) -> &'static str,
) -> (&'static str, CallReport) {
    let outcome = match &call.result {
        Ok(value) => ok(value, extra),
        Err(f) => {
            extra.insert("failure".into(), json!(f));
            if f.kind.is_trap_or_limit() {
                if f.kind == FailureKind::Trap {
                    "trap"
                } else {
                    "limit"
                }
            } else {
                "error"
            }
        }
    };
    (outcome, call.report)
}
