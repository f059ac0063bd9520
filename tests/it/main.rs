//! ringway integration tests: a real ringway process, real backends and clients on
//! loopback. Relay tests run on both paths (splice and buffered).

mod admin;
mod apps;
mod config;
mod connect;
mod lifecycle;
mod ports;
mod relay;
mod reload;
mod routes;
mod support;
mod switch;
mod units;

/// Generates `splice::NAME` and `buffered::NAME` tests from `fn NAME(splice: bool)`.
#[macro_export]
macro_rules! both_paths {
    ($($name:ident),* $(,)?) => {
        mod splice {
            $( #[test] fn $name() { super::$name(true) } )*
        }
        mod buffered {
            $( #[test] fn $name() { super::$name(false) } )*
        }
    };
}
