//! Optional bearer-token auth for `silo.v1.Silo` (SEMANTICS §1). Health and
//! reflection are served outside this interceptor.
use tonic::{Request, Status};

#[derive(Clone)]
pub struct Auth {
    expected: Option<String>,
}

impl Auth {
    pub fn new(token: Option<String>) -> Self {
        Auth { expected: token.map(|t| format!("Bearer {t}")) }
    }

    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else { return Ok(request) };
        let Some(value) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated("missing authorization header"));
        };
        let Ok(value) = value.to_str() else { return Err(Status::unauthenticated("invalid authorization header")) };
        if constant_time_eq(value.as_bytes(), expected.as_bytes()) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("invalid auth token"))
        }
    }
}

/// Compares secrets in time that depends only on their lengths, so a
/// caller cannot learn a token byte by byte from response times.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(value: Option<&[u8]>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(v) = value {
            let v = tonic::metadata::MetadataValue::try_from(v).unwrap();
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    #[test]
    fn token_rules() {
        let open = Auth::new(None);
        assert!(open.check(req(None)).is_ok());
        let auth = Auth::new(Some("s3cret".into()));
        assert!(auth.check(req(Some(b"Bearer s3cret"))).is_ok());
        assert_eq!(auth.check(req(None)).unwrap_err().message(), "missing authorization header");
        assert_eq!(auth.check(req(Some(b"Bearer nope"))).unwrap_err().message(), "invalid auth token");
        assert_eq!(auth.check(req(Some(b"s3cret"))).unwrap_err().message(), "invalid auth token");
        assert_eq!(auth.check(req(Some(b"Bearer \xff"))).unwrap_err().message(), "invalid authorization header");
    }
}
