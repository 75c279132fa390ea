//! A Ray stack opens in a process where nothing else installed rustls's
//! crypto provider (a stack with `file://` artifacts has no S3 store to do
//! it). A test binary of its own: any other test could install it first.
#![cfg(feature = "ray")]

use zenflow_stacks::orchestrator::ray::api::JobsApi;

#[test]
fn a_plain_http_head_needs_no_other_component_to_install_tls() {
    assert!(rustls::crypto::CryptoProvider::get_default().is_none(), "nothing installed a provider yet");
    let api = JobsApi::new("http://127.0.0.1:8265").expect("a client of a plain-HTTP head");
    assert_eq!(api.address(), "http://127.0.0.1:8265");
}
