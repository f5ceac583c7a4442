//! Test data built in one place: session records ([`session`]) and the TOML
//! of a tenant with its plugin chain ([`Tenant`], [`Plugin`]). Every field
//! has a sensible default, so a test names only what it is about.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use sessiond::config::hash_api_key;
use sessiond::session::{ClientInfo, Millis, SessionRecord, now_ms};

/// Numbers the records built by this process, so that each gets its own
/// token hash and public id.
static SERIAL: AtomicU64 = AtomicU64::new(1);

/// A session record of `tenant`, to be built: anonymous, no roles, created
/// and last seen now, one hour to live, 15 minutes idle, version 1, no
/// client details, no data, no plugin state. Its token hash and public id
/// (`pub-<n>`) are unique within the test process.
pub fn session(tenant: &str) -> SessionBuilder {
    let n = SERIAL.fetch_add(1, Ordering::Relaxed);
    SessionBuilder {
        serial: n,
        at: None,
        created_at: None,
        lifetime: 3_600_000,
        record: SessionRecord {
            token_hash: format!("{:016x}{:048x}", std::process::id(), n),
            public_id: format!("pub-{n}"),
            tenant: tenant.to_string(),
            user: None,
            roles: Vec::new(),
            created_at: 0,
            last_seen_at: 0,
            absolute_expires_at: 0,
            idle_timeout_ms: 900_000,
            version: 1,
            client: ClientInfo::default(),
            data: serde_json::Map::new(),
            plugin_state: BTreeMap::new(),
            idle_warned_at: None,
        },
    }
}

/// A [`SessionRecord`] under construction; see [`session`].
#[derive(Debug, Clone)]
pub struct SessionBuilder {
    serial: u64,
    /// When it was last seen (and created, unless `created_at` says
    /// otherwise); the lifetime counts from here. Now, when unset.
    at: Option<Millis>,
    created_at: Option<Millis>,
    lifetime: Millis,
    record: SessionRecord,
}

impl SessionBuilder {
    /// The number that makes this record's default ids unique.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    pub fn token_hash(mut self, token_hash: impl Into<String>) -> Self {
        self.record.token_hash = token_hash.into();
        self
    }

    pub fn public_id(mut self, public_id: impl Into<String>) -> Self {
        self.record.public_id = public_id.into();
        self
    }

    /// The user, or none for an anonymous session.
    pub fn user<'a>(mut self, user: impl Into<Option<&'a str>>) -> Self {
        self.record.user = user.into().map(str::to_string);
        self
    }

    pub fn roles(mut self, roles: &[&str]) -> Self {
        self.record.roles = roles.iter().map(|r| r.to_string()).collect();
        self
    }

    /// Created and last seen at `t`; the lifetime counts from `t`.
    pub fn at(mut self, t: Millis) -> Self {
        self.at = Some(t);
        self
    }

    /// Created at `t`, earlier than [`SessionBuilder::at`].
    pub fn created_at(mut self, t: Millis) -> Self {
        self.created_at = Some(t);
        self
    }

    /// The absolute lifetime, from [`SessionBuilder::at`].
    pub fn lifetime(mut self, ms: Millis) -> Self {
        self.lifetime = ms;
        self
    }

    pub fn idle_timeout(mut self, ms: Millis) -> Self {
        self.record.idle_timeout_ms = ms;
        self
    }

    pub fn remote_addr(mut self, addr: &str) -> Self {
        self.record.client.remote_addr = Some(addr.to_string());
        self
    }

    pub fn user_agent(mut self, agent: &str) -> Self {
        self.record.client.user_agent = Some(agent.to_string());
        self
    }

    pub fn device(mut self, device: &str) -> Self {
        self.record.client.device = Some(device.to_string());
        self
    }

    /// The shared data; panics unless `data` is a JSON object.
    pub fn data(mut self, data: Value) -> Self {
        match data {
            Value::Object(map) => self.record.data = map,
            other => panic!("session data must be a JSON object, not {other}"),
        }
        self
    }

    /// The private state of the plugin `plugin`.
    pub fn plugin_state(mut self, plugin: &str, state: Value) -> Self {
        self.record.plugin_state.insert(plugin.to_string(), state);
        self
    }

    pub fn build(self) -> SessionRecord {
        let at = self.at.unwrap_or_else(now_ms);
        SessionRecord {
            created_at: self.created_at.unwrap_or(at),
            last_seen_at: at,
            absolute_expires_at: at + self.lifetime,
            ..self.record
        }
    }
}

/// `text` as a TOML basic string (JSON's escapes are TOML's).
fn quoted(text: &str) -> String {
    Value::from(text).to_string()
}

/// The TOML of one tenant: `[tenants.<name>]` with its API keys and
/// settings, then its plugins in chain order. Join several tenants, and
/// sections such as `[server]`, by concatenating their texts.
#[derive(Debug, Clone)]
pub struct Tenant {
    name: String,
    key_hashes: Vec<String>,
    settings: Vec<String>,
    /// `[sessman]` enabled, and whether with `allow_unauthenticated`.
    sessman: Option<bool>,
    plugins: Vec<Plugin>,
}

impl Tenant {
    /// A tenant without keys, settings or plugins.
    pub fn new(name: &str) -> Tenant {
        Tenant {
            name: name.to_string(),
            key_hashes: Vec::new(),
            settings: Vec::new(),
            sessman: None,
            plugins: Vec::new(),
        }
    }

    /// Accepts the plain API key `key` (the config holds its hash).
    pub fn key(mut self, key: &str) -> Tenant {
        self.key_hashes.push(hash_api_key(key));
        self
    }

    /// Any tenant setting, as a TOML value: `setting("ttl_seconds", "600")`.
    pub fn setting(mut self, key: &str, value: &str) -> Tenant {
        self.settings.push(format!("{key} = {value}"));
        self
    }

    /// `ttl_seconds`.
    pub fn ttl(self, seconds: u64) -> Tenant {
        self.setting("ttl_seconds", &seconds.to_string())
    }

    /// `max_ttl_seconds`.
    pub fn max_ttl(self, seconds: u64) -> Tenant {
        self.setting("max_ttl_seconds", &seconds.to_string())
    }

    /// `idle_timeout_seconds`.
    pub fn idle(self, seconds: u64) -> Tenant {
        self.setting("idle_timeout_seconds", &seconds.to_string())
    }

    /// `max_sessions_per_user`.
    pub fn max_sessions(self, max: u32) -> Tenant {
        self.setting("max_sessions_per_user", &max.to_string())
    }

    /// `limit_policy`: `"deny"` or `"evict-lru"`.
    pub fn limit_policy(self, policy: &str) -> Tenant {
        self.setting("limit_policy", &quoted(policy))
    }

    /// The sessman API, enabled (for requests with this tenant's key).
    pub fn sessman(mut self) -> Tenant {
        self.sessman.get_or_insert(false);
        self
    }

    /// The sessman API, enabled, and requests without a key are this
    /// tenant's.
    pub fn allow_unauthenticated(mut self) -> Tenant {
        self.sessman = Some(true);
        self
    }

    /// Appends `plugin` to the chain.
    pub fn plugin(mut self, plugin: Plugin) -> Tenant {
        self.plugins.push(plugin);
        self
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        let name = &self.name;
        let keys: Vec<String> = self.key_hashes.iter().map(|k| quoted(k)).collect();
        let mut text = format!("\n[tenants.{name}]\napi_keys = [{}]\n", keys.join(", "));
        for line in &self.settings {
            text.push_str(line);
            text.push('\n');
        }
        if let Some(allow) = self.sessman {
            text.push_str(&format!("\n[tenants.{name}.sessman]\nenabled = true\n"));
            if allow {
                text.push_str("allow_unauthenticated = true\n");
            }
        }
        for plugin in &self.plugins {
            text.push_str(&format!("\n[[tenants.{name}.plugins]]\n"));
            text.push_str(&plugin.lines());
        }
        text
    }
}

/// One entry of a tenant's plugin chain.
#[derive(Debug, Clone)]
pub struct Plugin {
    name: String,
    path: String,
    grants: Vec<String>,
    config: Vec<(String, String)>,
    limits: Vec<(String, u64)>,
    circuit: Vec<(String, u64)>,
    on_error: Option<String>,
}

impl Plugin {
    /// The plugin `name` running the built component `component` (a name
    /// such as `audit_log`, see [`crate::plugin`]), with no grants, config
    /// or limit overrides.
    pub fn new(name: &str, component: &str) -> Plugin {
        Plugin::at_path(name, &crate::plugin(component).display().to_string())
    }

    /// The plugin `name` running the component at `path`, as written.
    pub fn at_path(name: &str, path: &str) -> Plugin {
        Plugin {
            name: name.to_string(),
            path: path.to_string(),
            grants: Vec::new(),
            config: Vec::new(),
            limits: Vec::new(),
            circuit: Vec::new(),
            on_error: None,
        }
    }

    /// The audit-log example plugin with its `audit` grant.
    pub fn audit_log() -> Plugin {
        Plugin::new("audit-log", "audit_log").grants(&["audit"])
    }

    /// The single-session example plugin with its `sessions` grant.
    pub fn single_session() -> Plugin {
        Plugin::new("single-session", "single_session").grants(&["sessions"])
    }

    pub fn grants(mut self, grants: &[&str]) -> Plugin {
        self.grants = grants.iter().map(|g| g.to_string()).collect();
        self
    }

    /// One `config` entry (a string).
    pub fn config(mut self, key: &str, value: &str) -> Plugin {
        self.config.push((key.to_string(), value.to_string()));
        self
    }

    /// One `limits` override, such as `limit("deadline_ms", 1000)`.
    pub fn limit(mut self, key: &str, value: u64) -> Plugin {
        self.limits.push((key.to_string(), value));
        self
    }

    /// One `circuit` (breaker) setting, such as `circuit("min_calls", 5)`.
    pub fn circuit(mut self, key: &str, value: u64) -> Plugin {
        self.circuit.push((key.to_string(), value));
        self
    }

    /// `on_error`: `"deny"` or `"allow"`.
    pub fn on_error(mut self, on_error: &str) -> Plugin {
        self.on_error = Some(on_error.to_string());
        self
    }

    /// The keys of the plugin's `[[tenants.x.plugins]]` table.
    fn lines(&self) -> String {
        let mut text = format!(
            "name = {}\npath = {}\n",
            quoted(&self.name),
            quoted(&self.path)
        );
        if !self.grants.is_empty() {
            let grants: Vec<String> = self.grants.iter().map(|g| quoted(g)).collect();
            text.push_str(&format!("grants = [{}]\n", grants.join(", ")));
        }
        if !self.config.is_empty() {
            let entries: Vec<String> = self
                .config
                .iter()
                .map(|(k, v)| format!("{k} = {}", quoted(v)))
                .collect();
            text.push_str(&format!("config = {{ {} }}\n", entries.join(", ")));
        }
        for (key, entries) in [("limits", &self.limits), ("circuit", &self.circuit)] {
            if !entries.is_empty() {
                let entries: Vec<String> =
                    entries.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                text.push_str(&format!("{key} = {{ {} }}\n", entries.join(", ")));
            }
        }
        if let Some(on_error) = &self.on_error {
            text.push_str(&format!("on_error = {}\n", quoted(on_error)));
        }
        text
    }
}
