//! The session stores a test can run on ([`Backend`]), and
//! [`every_backend!`](crate::every_backend), which runs a test once on each.
//! What a backend becomes is up to the test: store handles in the
//! conformance suite, a [`crate::server::TestServer`] in the API tests.

/// A session store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The in-process memory store.
    Memory,
    /// A single throwaway `redis-server`.
    Redis,
    /// The three-master Redis Cluster shared by the tests of one binary
    /// ([`crate::redis_server::RedisCluster::shared`]).
    Cluster,
    /// The SQLite store, in a temporary directory of the test's own.
    Embedded,
}

/// Runs each named async test function, which takes a [`Backend`], once per
/// backend: a test `<backend>::<function>` for each, in a module per
/// backend.
///
/// `every_backend!(stores: a, b)` runs them on every store backend, on a
/// multi-threaded runtime (the store tests race their own calls);
/// `every_backend!(servers: a, b)` on every backend a
/// [`crate::server::TestServer`] can be configured with. A new backend is
/// one `[module Variant]` entry in each list it belongs to.
#[macro_export]
macro_rules! every_backend {
    (stores: $($test:ident),+ $(,)?) => {
        $crate::every_backend!(@backends (flavor = "multi_thread", worker_threads = 4)
            [memory Memory] [redis Redis] [cluster Cluster] [embedded Embedded];
            ($($test),+));
    };
    (servers: $($test:ident),+ $(,)?) => {
        $crate::every_backend!(@backends ()
            [memory Memory] [redis Redis] [cluster Cluster] [embedded Embedded];
            ($($test),+));
    };
    (@backends $flavor:tt $([$module:ident $backend:ident])+; $tests:tt) => {
        $($crate::every_backend!(@module $flavor $module $backend $tests);)+
    };
    (@module $flavor:tt $module:ident $backend:ident ($($test:ident),+)) => {
        mod $module {
            $(
                #[tokio::test $flavor]
                async fn $test() {
                    super::$test($crate::Backend::$backend).await
                }
            )+
        }
    };
}
