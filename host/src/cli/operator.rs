//! The operator command line: a client of a running server's operator API
//! (`/admin/v1/...`), with an operator key.
//!
//! - `sessiond tenant create NAME [--settings JSON]`
//! - `sessiond tenant list`: one line per tenant (name, source, state,
//!   sessions)
//! - `sessiond tenant show NAME`
//! - `sessiond tenant delete NAME`
//! - `sessiond tenant set NAME [--settings JSON] [--disable|--enable]`
//! - `sessiond tenant key create NAME`: the key alone on stdout's first
//!   line, its id on stderr
//! - `sessiond tenant key list NAME`
//! - `sessiond tenant key revoke NAME ID`
//! - `sessiond plugin push FILE --tenant NAME`: the sha256 on stdout's
//!   first line, then the component's name, version, hooks and imports
//! - `sessiond chain show --tenant NAME`
//! - `sessiond chain set --tenant NAME (--plugin SPEC... | --file FILE |
//!   --empty) [--if-revision N]`, a SPEC being
//!   `name=SHA256[,grants=kv+audit][,on_error=allow][,config.KEY=VALUE...]`
//! - `sessiond chain revisions --tenant NAME`
//! - `sessiond chain rollback --tenant NAME REVISION [--if-revision N]`
//!
//! Each takes `--server URL` (`SESSIOND_URL`, default
//! `http://127.0.0.1:8080`) and `--operator-key KEY`
//! (`SESSIOND_OPERATOR_KEY`, required).
//!
//! Exit codes: 0 done; 1 the server refused (its problem is printed as
//! `error: <status> <title>: <detail>`) or could not be reached; 2 bad
//! input on the command line (a flag, a SPEC, a file).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode, Url, header};
use serde_json::{Map, Value, json};

/// Where the operator API is and the key to use it with.
#[derive(Debug, Args)]
pub(super) struct Connection {
    /// The server's base URL.
    #[arg(long, env = "SESSIOND_URL", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An operator key (one of `[operator] api_keys`, in plain).
    #[arg(long, env = "SESSIOND_OPERATOR_KEY", hide_env_values = true)]
    operator_key: Option<String>,
}

/// `sessiond tenant ...`: tenants and their keys.
#[derive(Debug, Subcommand)]
pub(super) enum TenantCommand {
    /// Create a tenant (with the default settings unless --settings).
    Create {
        /// The tenant's name.
        name: String,
        /// Its settings, as a JSON object (e.g. '{"ttl_seconds": 600}').
        #[arg(long, value_name = "JSON")]
        settings: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// List every tenant: name, source, state and sessions.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Show one tenant as JSON.
    Show {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Change a tenant's settings (a merge), or disable or enable it.
    Set {
        /// The tenant's name.
        name: String,
        /// Settings to change, as a JSON object; members left out keep
        /// their value.
        #[arg(long, value_name = "JSON")]
        settings: Option<String>,
        /// Refuse the tenant's new requests (its sessions are kept).
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Serve a disabled tenant again.
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete a tenant: it serves nothing from now on, its sessions end
    /// (reason `revoked`, end hooks run), then it is gone.
    Delete {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// A tenant's API keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

/// `sessiond tenant key ...`.
#[derive(Debug, Subcommand)]
pub(super) enum KeyCommand {
    /// Make a key: printed alone on the first line of stdout (its id on
    /// stderr), and shown only this once.
    Create {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// List a tenant's key ids.
    List {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Revoke a key: requests with it get 401 from then on.
    Revoke {
        /// The tenant's name.
        name: String,
        /// The key's id (from `tenant key list`).
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

/// `sessiond plugin push`.
#[derive(Debug, Args)]
pub(super) struct PushArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// The tenant to upload it to.
    #[arg(long)]
    tenant: String,
    #[command(flatten)]
    connection: Connection,
}

/// `sessiond chain ...`: a tenant's plugin chain.
#[derive(Debug, Subcommand)]
pub(super) enum ChainCommand {
    /// Show the chain in effect as JSON (with its revision).
    Show {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Set the chain: the next revision.
    Set {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// A plugin, in chain order (repeatable):
        /// name=SHA256[,grants=kv+audit][,on_error=allow][,config.KEY=VALUE...]
        #[arg(long = "plugin", value_name = "SPEC")]
        plugins: Vec<String>,
        /// A JSON file holding the whole body ({"plugins": [...]}).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["plugins", "empty"])]
        file: Option<PathBuf>,
        /// Set an empty chain (no plugins).
        #[arg(long, conflicts_with = "plugins")]
        empty: bool,
        /// Only if the chain in effect is this revision.
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
        #[command(flatten)]
        connection: Connection,
    },
    /// List the kept revisions, oldest first, as JSON.
    Revisions {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Put a kept revision's plugins back in effect, as the next revision.
    Rollback {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The kept revision to put back.
        revision: u64,
        /// Only if the chain in effect is this revision.
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
        #[command(flatten)]
        connection: Connection,
    },
}

/// Why a command stopped: the message for stderr and the exit code.
struct Failure {
    code: u8,
    message: String,
}

/// Bad input on the command line: exit 2.
fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

/// The server refused, or was not reached: exit 1.
fn failed(message: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        message: message.into(),
    }
}

type Outcome = Result<(), Failure>;

fn exit(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Runs `sessiond tenant ...`.
pub(super) fn tenant(cmd: TenantCommand) -> ExitCode {
    exit(run_tenant(cmd))
}

/// Runs `sessiond chain ...`.
pub(super) fn chain(cmd: ChainCommand) -> ExitCode {
    exit(run_chain(cmd))
}

/// Runs `sessiond plugin push`.
pub(super) fn push(args: PushArgs) -> ExitCode {
    exit(run_push(args))
}

fn run_tenant(cmd: TenantCommand) -> Outcome {
    match cmd {
        TenantCommand::Create {
            name,
            settings,
            connection,
        } => {
            let mut body = json!({ "name": name });
            if let Some(text) = settings {
                body["settings"] = Value::Object(settings_object(&text)?);
            }
            let api = Client::new(connection)?;
            let created = api.call(Method::POST, &["tenants"], Body::json(&body), None)?;
            print_json(&created.body)
        }
        TenantCommand::List { connection } => {
            let all = Client::new(connection)?.call(Method::GET, &["tenants"], Body::None, None)?;
            for t in all.body["tenants"].as_array().into_iter().flatten() {
                let state = if t["disabled"].as_bool() == Some(true) {
                    "disabled"
                } else {
                    "enabled"
                };
                let sessions = t["sessions"]
                    .as_u64()
                    .map_or_else(|| "?".to_string(), |n| n.to_string());
                println!(
                    "{}\t{}\t{state}\t{sessions} sessions",
                    text(&t["name"]),
                    text(&t["source"]),
                );
            }
            Ok(())
        }
        TenantCommand::Delete { name, connection } => {
            let api = Client::new(connection)?;
            api.call(Method::DELETE, &["tenants", &name], Body::None, None)?;
            eprintln!("deleting {name}: its sessions end, then it is gone");
            Ok(())
        }
        TenantCommand::Show { name, connection } => {
            let api = Client::new(connection)?;
            print_json(
                &api.call(Method::GET, &["tenants", &name], Body::None, None)?
                    .body,
            )
        }
        TenantCommand::Set {
            name,
            settings,
            disable,
            enable,
            connection,
        } => {
            let mut body = Map::new();
            if let Some(text) = settings {
                body.insert("settings".into(), Value::Object(settings_object(&text)?));
            }
            if disable || enable {
                body.insert("disabled".into(), Value::Bool(disable));
            }
            if body.is_empty() {
                return Err(usage(
                    "tenant set: nothing to change (pass --settings, --disable or --enable)",
                ));
            }
            let api = Client::new(connection)?;
            let body = Body::json(&Value::Object(body));
            print_json(
                &api.call(Method::PATCH, &["tenants", &name], body, None)?
                    .body,
            )
        }
        TenantCommand::Key(KeyCommand::Create { name, connection }) => {
            let api = Client::new(connection)?;
            let key = api.call(Method::POST, &["tenants", &name, "keys"], Body::None, None)?;
            println!("{}", text(&key.body["key"]));
            eprintln!("{}", text(&key.body["id"]));
            Ok(())
        }
        TenantCommand::Key(KeyCommand::List { name, connection }) => {
            let api = Client::new(connection)?;
            let keys = api.call(Method::GET, &["tenants", &name, "keys"], Body::None, None)?;
            for key in keys.body["keys"].as_array().into_iter().flatten() {
                println!("{}\t{}", text(&key["id"]), key["created_at"]);
            }
            Ok(())
        }
        TenantCommand::Key(KeyCommand::Revoke {
            name,
            id,
            connection,
        }) => {
            let api = Client::new(connection)?;
            api.call(
                Method::DELETE,
                &["tenants", &name, "keys", &id],
                Body::None,
                None,
            )?;
            eprintln!("revoked {id}");
            Ok(())
        }
    }
}

fn run_push(args: PushArgs) -> Outcome {
    let bytes = std::fs::read(&args.file)
        .map_err(|e| usage(format!("cannot read {}: {e}", args.file.display())))?;
    let api = Client::new(args.connection)?;
    let path = ["tenants", args.tenant.as_str(), "components"];
    let body = Body::Bytes("application/wasm", bytes);
    let kept = api.call(Method::POST, &path, body, None)?;
    let c = &kept.body;
    println!("{}", text(&c["sha256"]));
    println!("  name:    {}", text(&c["name"]));
    println!("  version: {}", text(&c["version"]));
    println!("  hooks:   {}", list(&c["hooks"]));
    println!("  imports: {}", list(&c["imports"]));
    if kept.status == StatusCode::OK {
        eprintln!("(already uploaded)");
    }
    Ok(())
}

fn run_chain(cmd: ChainCommand) -> Outcome {
    match cmd {
        ChainCommand::Show { tenant, connection } => {
            let api = Client::new(connection)?;
            let chain = api.call(
                Method::GET,
                &["tenants", &tenant, "chain"],
                Body::None,
                None,
            )?;
            print_json(&chain.body)
        }
        ChainCommand::Set {
            tenant,
            plugins,
            file,
            empty,
            if_revision,
            connection,
        } => {
            let body = match file {
                Some(path) => {
                    let text = std::fs::read(&path).map_err(|e| {
                        usage(format!("--file: cannot read {}: {e}", path.display()))
                    })?;
                    serde_json::from_slice::<Value>(&text).map_err(|e| {
                        usage(format!("--file: {} is not JSON: {e}", path.display()))
                    })?
                }
                None if plugins.is_empty() && !empty => {
                    return Err(usage(
                        "chain set: pass --plugin SPEC (one or more), --file FILE, or --empty",
                    ));
                }
                None => {
                    let entries = plugins
                        .iter()
                        .map(|spec| plugin_entry(spec))
                        .collect::<Result<Vec<_>, _>>()?;
                    json!({ "plugins": entries })
                }
            };
            let api = Client::new(connection)?;
            let path = ["tenants", tenant.as_str(), "chain"];
            let set = api.call(Method::PUT, &path, Body::json(&body), if_revision)?;
            print_json(&set.body)
        }
        ChainCommand::Revisions { tenant, connection } => {
            let api = Client::new(connection)?;
            let path = ["tenants", tenant.as_str(), "chain", "revisions"];
            print_json(&api.call(Method::GET, &path, Body::None, None)?.body)
        }
        ChainCommand::Rollback {
            tenant,
            revision,
            if_revision,
            connection,
        } => {
            let api = Client::new(connection)?;
            let path = ["tenants", tenant.as_str(), "chain", "rollback"];
            let body = Body::json(&json!({ "revision": revision }));
            print_json(&api.call(Method::POST, &path, body, if_revision)?.body)
        }
    }
}

/// `--settings`: a JSON object.
fn settings_object(text: &str) -> Result<Map<String, Value>, Failure> {
    serde_json::from_str(text).map_err(|e| usage(format!("--settings is not a JSON object: {e}")))
}

/// One `--plugin` SPEC as a chain entry:
/// `name=SHA256[,grants=kv+audit][,on_error=allow][,config.KEY=VALUE...]`.
fn plugin_entry(spec: &str) -> Result<Value, Failure> {
    let bad = |why: String| {
        usage(format!(
            "--plugin {spec:?}: {why} (expected \
             name=SHA256[,grants=kv+audit][,on_error=allow][,config.KEY=VALUE...])"
        ))
    };
    let mut parts = spec.split(',');
    let (name, sha256) = parts
        .next()
        .and_then(|first| first.split_once('='))
        .filter(|(name, sha256)| !name.is_empty() && !sha256.is_empty())
        .ok_or_else(|| bad("it does not start with name=SHA256".into()))?;
    let mut entry = Map::new();
    entry.insert("name".into(), json!(name));
    entry.insert("sha256".into(), json!(sha256));
    let mut config = Map::new();
    for part in parts {
        let Some((key, value)) = part.split_once('=') else {
            return Err(bad(format!("{part:?} is not KEY=VALUE")));
        };
        let fresh = match key {
            "grants" => {
                let grants: Vec<&str> = value.split('+').filter(|g| !g.is_empty()).collect();
                entry.insert("grants".into(), json!(grants)).is_none()
            }
            "on_error" => entry.insert("on_error".into(), json!(value)).is_none(),
            _ => match key.strip_prefix("config.") {
                Some(k) if !k.is_empty() => config.insert(k.into(), json!(value)).is_none(),
                _ => return Err(bad(format!("unknown member {key:?}"))),
            },
        };
        if !fresh {
            return Err(bad(format!("{key:?} is given twice")));
        }
    }
    if !config.is_empty() {
        entry.insert("config".into(), Value::Object(config));
    }
    Ok(Value::Object(entry))
}

fn print_json(value: &Value) -> Outcome {
    let text = serde_json::to_string_pretty(value).map_err(|e| failed(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// A string member as it is, anything else as JSON.
fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string)
}

/// A list of strings, comma-separated (`none` when empty).
fn list(value: &Value) -> String {
    let items: Vec<String> = value.as_array().into_iter().flatten().map(text).collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// A request body.
enum Body {
    None,
    /// A media type and the bytes.
    Bytes(&'static str, Vec<u8>),
}

impl Body {
    fn json(value: &Value) -> Body {
        Body::Bytes("application/json", value.to_string().into_bytes())
    }
}

/// A successful answer.
struct Reply {
    status: StatusCode,
    /// Its JSON body; null when it has none (204).
    body: Value,
}

/// The operator API of one server, with one key.
struct Client {
    base: Url,
    key: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    fn new(connection: Connection) -> Result<Client, Failure> {
        let Some(key) = connection.operator_key.filter(|k| !k.is_empty()) else {
            return Err(usage(
                "no operator key: pass --operator-key KEY or set SESSIOND_OPERATOR_KEY",
            ));
        };
        let base = Url::parse(&connection.server)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                usage(format!(
                    "--server {:?} (or SESSIOND_URL) is not an http(s) URL",
                    connection.server
                ))
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| failed(format!("cannot make an HTTP client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(format!("cannot start the async runtime: {e}")))?;
        Ok(Client {
            base,
            key,
            http,
            runtime,
        })
    }

    /// `method` on `/admin/v1/<segments...>` (each segment escaped), with
    /// `If-Match: "<if_revision>"` when given. A problem answer, or no
    /// answer, is a [`Failure`] with exit code 1.
    fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Body,
        if_revision: Option<u64>,
    ) -> Result<Reply, Failure> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| usage("--server cannot be a base URL"))?
            .pop_if_empty()
            .extend(["admin", "v1"])
            .extend(segments);
        let mut request = self
            .http
            .request(method, url.clone())
            .bearer_auth(&self.key);
        if let Body::Bytes(media, bytes) = body {
            request = request.header(header::CONTENT_TYPE, media).body(bytes);
        }
        if let Some(revision) = if_revision {
            request = request.header(header::IF_MATCH, format!("\"{revision}\""));
        }
        let (status, bytes) = self
            .runtime
            .block_on(async {
                let response = request.send().await?;
                let status = response.status();
                Ok::<_, reqwest::Error>((status, response.bytes().await?))
            })
            .map_err(|e| {
                let server = self.base.as_str().trim_end_matches('/');
                failed(format!("cannot reach {server}: {}", causes(&e)))
            })?;
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let reason = status.canonical_reason().unwrap_or("");
            let problem = parsed.unwrap_or_default();
            let title = problem["title"].as_str().unwrap_or(reason);
            let detail = match problem["detail"].as_str() {
                Some(detail) => detail.to_string(),
                None => String::from_utf8_lossy(&bytes)
                    .trim()
                    .chars()
                    .take(300)
                    .collect(),
            };
            return Err(failed(format!("{} {title}: {detail}", status.as_u16())));
        }
        let body = match parsed {
            Some(value) => value,
            None if bytes.is_empty() => Value::Null,
            None => return Err(failed(format!("{url}: the answer ({status}) is not JSON"))),
        };
        Ok(Reply { status, body })
    }
}

/// An error with its causes, `: `-separated.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
