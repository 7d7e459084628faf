//! Which part of the CRM contract a request addresses.

use axum::http::Method;

/// An API request's route, for statistics and for modes that treat reads
/// and writes differently (`reject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /customers?phone=`
    Lookup,
    /// `POST /cases`
    CreateCase,
    /// `GET /cases?externalRef=`
    FindCases,
    /// `POST /events`: a Genesys event delivered by the origin.
    PostEvent,
    /// Anything else (answered 404 or 405 when the mode lets it through).
    Other,
}

impl Route {
    /// Classifies a request by method and path.
    pub fn of(method: &Method, path: &str) -> Self {
        match (method, path) {
            (&Method::GET, "/customers") => Self::Lookup,
            (&Method::POST, "/cases") => Self::CreateCase,
            (&Method::GET, "/cases") => Self::FindCases,
            (&Method::POST, "/events") => Self::PostEvent,
            _ => Self::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_contract_routes() {
        assert_eq!(Route::of(&Method::GET, "/customers"), Route::Lookup);
        assert_eq!(Route::of(&Method::POST, "/cases"), Route::CreateCase);
        assert_eq!(Route::of(&Method::GET, "/cases"), Route::FindCases);
        assert_eq!(Route::of(&Method::POST, "/events"), Route::PostEvent);
        assert_eq!(Route::of(&Method::POST, "/customers"), Route::Other);
        assert_eq!(Route::of(&Method::GET, "/nope"), Route::Other);
    }
}
