//! The api against a real store, an in-process bus and a real SMTP server,
//! over real sockets.

mod auth;
mod chat;
mod common;
mod hardening;
mod profile;
