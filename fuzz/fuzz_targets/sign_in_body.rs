//! A sign-in request's body, read as `POST /api/auth/login` reads it: refused with a 4xx naming
//! the problem, or an email (normalised, bounded) and a 32-byte auth key.
#![no_main]

use axum::body::Body;
use axum::response::IntoResponse;
use http::{Request, header};
use libfuzzer_sys::fuzz_target;
use ooda::accounts::normalise_email;
use ooda::gateway::login::MAX_EMAIL_LEN;
use ooda::gateway::login::fuzzing::sign_in_body;

fuzz_target!(|body: &[u8]| {
    let request = Request::post("/api/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a request");
    match futures::executor::block_on(sign_in_body(request)) {
        Ok((email, _key)) => {
            assert!(email.len() <= MAX_EMAIL_LEN);
            assert_eq!(normalise_email(&email), email, "normalised");
        }
        Err(error) => {
            let status = error.into_response().status();
            assert!(status.is_client_error(), "{status}");
        }
    }
});
