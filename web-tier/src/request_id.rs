//! Request ids a client chooses: the `Idempotency-Key` or `X-Request-Id` header of an
//! upload, and the `{id}` of `GET /results/{id}`.
//!
//! A client id must be a UUID, written hyphenated (`67e55044-10b1-426f-9247-bb680e5fe0c8`,
//! what `uuidgen` prints) or as 32 hex digits (nginx's `$request_id`); either case. It
//! becomes the request id itself, so it names the request's objects and its result
//! (`results/<id>.json`) and is always answered back in `X-Request-Id`, hyphenated and in
//! lower case. Anything else is refused with 400 before the body is read: a UUID is what
//! the queues, the buckets and every tier already key on, and taking only UUIDs keeps
//! ids from different clients from colliding by accident (a random v4 UUID is the
//! client's job; the server checks the form, not the version).
//!
//! Both headers may be sent only if they agree; each may appear once.

use axum::http::HeaderMap;
use iras_protocol::RequestId;

use crate::error::AppError;

/// The header a client sends to make a retried upload idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Longest prefix of a refused value echoed in the reason.
const MAX_ECHOED_CHARS: usize = 48;

/// Parses a client-chosen id: a UUID, hyphenated or as 32 hex digits.
pub fn parse(raw: &str) -> Result<RequestId, AppError> {
    let refused = || {
        AppError::BadRequestId(format!(
            "{:?} is not a UUID (send e.g. the output of `uuidgen`)",
            raw.chars().take(MAX_ECHOED_CHARS).collect::<String>()
        ))
    };
    let hyphenated = raw.len() == 36;
    let simple = raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_hexdigit());
    if !hyphenated && !simple {
        return Err(refused());
    }
    uuid::Uuid::try_parse(raw)
        .map(RequestId::from_uuid)
        .map_err(|_| refused())
}

/// The id the client chose for this upload, if any.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<RequestId>, AppError> {
    let mut chosen: Option<(RequestId, &'static str)> = None;
    for name in [IDEMPOTENCY_KEY_HEADER, crate::REQUEST_ID_HEADER] {
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else { continue };
        if values.next().is_some() {
            return Err(AppError::BadRequestId(format!(
                "send the {name} header at most once"
            )));
        }
        let value = value
            .to_str()
            .map_err(|_| AppError::BadRequestId(format!("the {name} header is not ASCII text")))?;
        let id = parse(value.trim())?;
        match chosen {
            Some((other, first)) if other != id => {
                return Err(AppError::BadRequestId(format!(
                    "the {first} and {name} headers name different ids"
                )));
            }
            _ => chosen = Some((id, name)),
        }
    }
    Ok(chosen.map(|(id, _)| id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const ID: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn accepts_both_uuid_forms_and_either_header() {
        let id: RequestId = ID.parse().unwrap();
        assert_eq!(from_headers(&HeaderMap::new()).unwrap(), None);
        for h in [
            headers(&[("idempotency-key", ID)]),
            headers(&[("x-request-id", &ID.to_uppercase())]),
            headers(&[("idempotency-key", &ID.replace('-', ""))]),
            headers(&[("idempotency-key", ID), ("x-request-id", ID)]),
        ] {
            assert_eq!(from_headers(&h).unwrap(), Some(id), "{h:?}");
        }
    }

    #[test]
    fn refuses_other_values_with_a_reason() {
        let other = "00000000-0000-4000-8000-000000000000";
        for (h, reason) in [
            (headers(&[("idempotency-key", "my-key-1")]), "is not a UUID"),
            (headers(&[("idempotency-key", "")]), "is not a UUID"),
            (
                headers(&[("idempotency-key", &format!("{{{ID}}}"))]),
                "is not a UUID",
            ),
            (
                headers(&[("x-request-id", "../../etc/passwd")]),
                "is not a UUID",
            ),
            (
                headers(&[("idempotency-key", ID), ("idempotency-key", ID)]),
                "at most once",
            ),
            (
                headers(&[("idempotency-key", ID), ("x-request-id", other)]),
                "different ids",
            ),
        ] {
            let err = from_headers(&h).unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
            assert!(err.to_string().contains(reason), "{err}");
            assert!(!err.to_string().contains('\n'));
        }
        let long = "x".repeat(10_000);
        assert!(parse(&long).unwrap_err().to_string().len() < 200);
    }
}
