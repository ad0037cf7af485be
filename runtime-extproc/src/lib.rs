//! `aigw-extproc`: the Envoy external processor of aigw.
//!
//! Envoy calls it on every request of an AI route (the generated EnvoyExtensionPolicy). It owns
//! the AI work of each request: picking the route, rule and backend, translating the request
//! for the backend's API, adding credentials, and on the way back reading token usage,
//! computing costs into dynamic metadata and recording metrics. Its configuration is the file
//! `aigw build` generates (`aigw-filterconfig`), reloaded atomically when it or a mounted
//! credential changes.
//!
//! Modules: [`auth`] (backend credentials: keys, SigV4, cloud tokens), [`config`] (load the
//! contract into what requests read), [`reload`] (the config in force and its watcher),
//! [`server`] (the gRPC service), [`processor`] (one stream's state machine), [`router`]
//! (route and backend choice), [`translate`] (one module per provider), [`endpoint`],
//! [`usage`], [`costs`], [`metrics`], [`admin`] (metrics and health over HTTP), [`time`]
//! (RFC 3339 times read and written).

pub mod admin;
pub mod auth;
pub mod config;
pub mod costs;
pub mod endpoint;
pub mod metrics;
pub mod processor;
pub mod ratelimit;
pub mod redact;
pub mod reload;
pub mod router;
pub mod server;
#[doc(hidden)]
pub mod testing;
pub mod time;
pub mod translate;
pub mod usage;
