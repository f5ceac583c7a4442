//! The host side of the `sessiond:plugin` world, generated from `wit/`.
//!
//! Exports are called with `call_async` on a fiber, so a plugin waiting on
//! the session store (`kv`, `sessions`, `audit`) suspends its request's task
//! instead of blocking a thread. `log` and `clock` never wait and stay
//! synchronous.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: {
        "sessiond:plugin/kv": async | trappable,
        "sessiond:plugin/sessions": async | trappable,
        "sessiond:plugin/audit": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});
