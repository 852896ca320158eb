//! The WeChat client (`wechat`) against the sandbox over real HTTP: every endpoint,
//! its success and its documented errors; the token cache; faults; pushes; pages.

mod connections;
mod endpoints;
mod faults;
mod pages;
mod pushes;
mod rulebook;
mod support;
mod tokens;
