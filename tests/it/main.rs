//! ringway integration tests: a real ringway process, real backends and clients on
//! loopback. Relay tests run on every relay mode (auto, buffered, splice).

mod access_log;
mod admin;
mod apps;
mod balance;
mod bounds;
mod config;
mod connect;
mod dns;
mod eject;
mod lifecycle;
mod limits;
mod peers;
mod ports;
mod relay;
mod reload;
mod routes;
mod share;
mod share_support;
mod support;
mod switch;
mod units;
mod upgrade;
mod workers;

/// Generates `auto::NAME`, `buffered::NAME` and `splice::NAME` tests from
/// `fn NAME(relay: Relay)`: every relay test runs on the adaptive default and on the two
/// forced modes.
#[macro_export]
macro_rules! all_paths {
    ($($name:ident),* $(,)?) => {
        mod auto {
            $( #[test] fn $name() { super::$name($crate::support::Relay::Auto) } )*
        }
        mod buffered {
            $( #[test] fn $name() { super::$name($crate::support::Relay::Buffered) } )*
        }
        mod splice {
            $( #[test] fn $name() { super::$name($crate::support::Relay::Splice) } )*
        }
    };
}
