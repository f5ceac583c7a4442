//! The glue between the [`Plugin`] trait and the generated WIT exports.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use crate::types::parse_json;
use crate::wit::exports::sessiond::plugin::hooks::Guest;
use crate::wit::sessiond::plugin::types as wit;
use crate::{Config, EndInfo, Plugin, Result, Session, SessionSummary};

thread_local! {
    /// The one plugin value of this component instance, created by `init`
    /// (or, should a host call a hook first, by the first hook).
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Runs `f` on the plugin instance and turns its error into the WIT string.
fn with_plugin<P: Plugin, R>(f: impl FnOnce(&mut P) -> Result<R>) -> Result<R, String> {
    INSTANCE.with(|slot| {
        let mut slot = slot
            .try_borrow_mut()
            .map_err(|_| "sessiond-sdk: the plugin was re-entered during a hook".to_owned())?;
        let plugin = slot
            .get_or_insert_with(|| Box::new(P::default()))
            .downcast_mut::<P>()
            .ok_or_else(|| "sessiond-sdk: more than one plugin type exported".to_owned())?;
        f(plugin).map_err(String::from)
    })
}

/// Implements the generated `Guest` trait for any [`Plugin`]; the
/// [`export_plugin!`](crate::export_plugin) macro exports `Adapter<YourType>`.
#[doc(hidden)]
pub struct Adapter<P>(PhantomData<P>);

/// Used by `export_plugin!` in native builds, where nothing is exported, to
/// check that the type implements [`Plugin`].
#[doc(hidden)]
pub fn assert_plugin<P: Plugin>() {}

/// The hooks to report in `describe`: `P::HOOKS`, each once.
pub(crate) fn described_hooks<P: Plugin>() -> Vec<crate::Hook> {
    let mut hooks = Vec::with_capacity(P::HOOKS.len());
    for hook in P::HOOKS {
        if !hooks.contains(hook) {
            hooks.push(*hook);
        }
    }
    hooks
}

impl<P: Plugin> Guest for Adapter<P> {
    fn describe() -> wit::PluginInfo {
        wit::PluginInfo {
            name: P::NAME.to_owned(),
            version: P::VERSION.to_owned(),
            hooks: described_hooks::<P>()
                .into_iter()
                .map(crate::Hook::into_wit)
                .collect(),
        }
    }

    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        let config = Config::from(config);
        let mut plugin = P::default();
        plugin.init(&config).map_err(String::from)?;
        INSTANCE.with(|slot| {
            *slot
                .try_borrow_mut()
                .map_err(|_| "sessiond-sdk: init was called during a hook".to_owned())? =
                Some(Box::new(plugin));
            Ok(())
        })
    }

    fn on_session_start(session: wit::Session) -> Result<wit::Verdict, String> {
        with_plugin(|plugin: &mut P| {
            let session = Session::from_wit(session)?;
            let client = session.client.clone();
            plugin.on_session_start(session, client)?.into_wit()
        })
    }

    fn on_session_update(
        session: wit::Session,
        proposed: wit::Changes,
    ) -> Result<wit::UpdateVerdict, String> {
        with_plugin(|plugin: &mut P| {
            let session = Session::from_wit(session)?;
            let proposed = crate::Changes::from_wit(&proposed)?;
            plugin.on_session_update(session, proposed)?.into_wit()
        })
    }

    fn on_session_end(session: wit::Session, end: wit::EndInfo) -> Result<(), String> {
        with_plugin(|plugin: &mut P| {
            let session = Session::from_wit(session)?;
            plugin.on_session_end(session, EndInfo::from_wit(end))
        })
    }

    fn on_event(
        session: wit::Session,
        name: String,
        payload: String,
    ) -> Result<wit::Verdict, String> {
        with_plugin(|plugin: &mut P| {
            let session = Session::from_wit(session)?;
            let payload = parse_json("the event payload", &payload)?;
            plugin.on_event(session, name, payload)?.into_wit()
        })
    }

    fn on_message(
        session: wit::Session,
        handler: String,
        payload: String,
    ) -> Result<wit::MessageReply, String> {
        with_plugin(|plugin: &mut P| {
            let session = Session::from_wit(session)?;
            let payload = parse_json("the message payload", &payload)?;
            plugin.on_message(session, handler, payload)?.into_wit()
        })
    }

    fn on_list_active(
        user: String,
        sessions: Vec<wit::SessionSummary>,
    ) -> Result<Vec<wit::SessionSummary>, String> {
        with_plugin(|plugin: &mut P| {
            let sessions = sessions
                .into_iter()
                .map(SessionSummary::from_wit)
                .collect::<Result<Vec<_>>>()?;
            Ok(plugin
                .on_list_active(user, sessions)?
                .into_iter()
                .map(SessionSummary::into_wit)
                .collect())
        })
    }
}

/// Exports a [`Plugin`] as this component's `sessiond:plugin/hooks`
/// implementation. Invoke it once, at the top level of your plugin crate
/// (a `cdylib`), with your plugin type:
///
/// ```
/// # use sessiond_sdk::{Hook, Plugin};
/// #[derive(Default)]
/// struct Noop;
///
/// impl Plugin for Noop {
///     const NAME: &'static str = "noop";
///     const VERSION: &'static str = "0.1.0";
///     const HOOKS: &'static [Hook] = &[];
/// }
///
/// sessiond_sdk::export_plugin!(Noop);
/// ```
///
/// The SDK creates the plugin value with [`Default`] and calls
/// [`Plugin::init`] when the host calls `init`, then routes every hook call
/// to it. In native builds (unit tests) the macro exports nothing and only
/// checks that the type implements [`Plugin`].
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty $(,)?) => {
        const _: () = {
            #[cfg(target_arch = "wasm32")]
            type __SessiondPluginExport = $crate::__private::Adapter<$plugin>;
            #[cfg(target_arch = "wasm32")]
    $crate::wit::__export_hooks!(__SessiondPluginExport with_types_in $crate::wit);
            #[cfg(not(target_arch = "wasm32"))]
            const _: fn() = $crate::__private::assert_plugin::<$plugin>;
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Changes, ClientInfo, Hook, Verdict};
    use serde_json::Value;

    #[derive(Default)]
    struct Counting {
        greeting: String,
        calls: u32,
    }

    impl Plugin for Counting {
        const NAME: &'static str = "counting";
        const VERSION: &'static str = "9.9.9";
        const HOOKS: &'static [Hook] = &[Hook::SessionStart, Hook::Event, Hook::SessionStart];

        fn init(&mut self, config: &Config) -> Result<()> {
            self.greeting = config.require("greeting")?.to_owned();
            Ok(())
        }

        fn on_session_start(&mut self, _session: Session, _client: ClientInfo) -> Result<Verdict> {
            self.calls += 1;
            Ok(Verdict::allow(
                Changes::new()
                    .data_set("greeting", &self.greeting)
                    .data_set("calls", &self.calls),
            ))
        }

        fn on_event(
            &mut self,
            _session: Session,
            name: String,
            _payload: Value,
        ) -> Result<Verdict> {
            Ok(Verdict::allow(Changes::new().state(&name)))
        }
    }

    fn session() -> wit::Session {
        b"s\0t\0\0\x000\x000\x000\x000\x001\0\0\0\0{}\0{}".to_vec()
    }

    type A = Adapter<Counting>;

    #[test]
    fn describe_lists_each_hook_once() {
        let info = A::describe();
        assert_eq!(info.name, "counting");
        assert_eq!(info.version, "9.9.9");
        assert_eq!(info.hooks.len(), 2);
        assert!(matches!(info.hooks[0], wit::Hook::SessionStart));
        assert!(matches!(info.hooks[1], wit::Hook::Event));
    }

    #[test]
    fn init_then_hooks_share_the_instance() {
        assert_eq!(
            A::init(vec![]).unwrap_err(),
            "config attribute `greeting` is required"
        );
        A::init(vec![("greeting".into(), "hi".into())]).unwrap();
        A::on_session_start(session()).unwrap();
        let wit::Verdict::Allow(changes) = A::on_session_start(session()).unwrap() else {
            panic!("expected allow");
        };
        assert_eq!(changes, br#"{"data_patch":{"calls":2,"greeting":"hi"}}"#);
        // init again starts from a fresh value.
        A::init(vec![("greeting".into(), "yo".into())]).unwrap();
        let wit::Verdict::Allow(changes) = A::on_session_start(session()).unwrap() else {
            panic!("expected allow");
        };
        assert_eq!(changes, br#"{"data_patch":{"calls":1,"greeting":"yo"}}"#);
    }

    #[test]
    fn plugin_errors_become_strings() {
        // A state that is not an object is the plugin's error.
        let error = A::on_event(session(), "e".into(), "null".into()).unwrap_err();
        assert_eq!(
            error,
            "the plugin state must be a JSON object, not a string"
        );
        let error = A::on_event(session(), "e".into(), "{".into()).unwrap_err();
        assert!(
            error.starts_with("the host sent invalid JSON for the event payload"),
            "{error}"
        );
    }

    #[test]
    fn default_hooks() {
        let error = A::on_message(session(), "ping".into(), "1".into()).unwrap_err();
        assert_eq!(error, "no handler named \"ping\"");
        assert!(matches!(
            A::on_session_update(session(), b"{}".to_vec()).unwrap(),
            wit::UpdateVerdict::Accept
        ));
        A::on_session_end(
            session(),
            wit::EndInfo {
                reason: wit::EndReason::Revoked,
                end_id: "e".into(),
                ended_at: 1,
            },
        )
        .unwrap();
        let summary = wit::SessionSummary {
            id: "x".into(),
            roles: vec![],
            created_at: 1,
            last_seen_at: 2,
            expires_at: 3,
            client: wit::ClientInfo {
                remote_addr: None,
                user_agent: None,
                device: None,
            },
            annotations: "{}".into(),
        };
        let listed = A::on_list_active("u".into(), vec![summary]).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, "x");
    }
}
