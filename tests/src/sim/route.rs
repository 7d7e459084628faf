//! Which part of the CRM contract a request addresses.

use axum::http::Method;

/// An API request's route, for statistics and for modes that treat reads
/// and writes differently (`reject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /customers?phone=`
    Lookup,
    /// `GET /customers` without `phone`: the paged list the sync reads.
    ListCustomers,
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
    /// The route's name in the admin API (`/admin/correlations`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lookup => "lookup",
            Self::ListCustomers => "listCustomers",
            Self::CreateCase => "createCase",
            Self::FindCases => "findCases",
            Self::PostEvent => "postEvent",
            Self::Other => "other",
        }
    }

    /// Classifies a request by method, path and query.
    pub fn of(method: &Method, path: &str, query: Option<&str>) -> Self {
        let has_phone = query.is_some_and(|q| q.split('&').any(|pair| pair.starts_with("phone=")));
        match (method, path) {
            (&Method::GET, "/customers") if has_phone => Self::Lookup,
            (&Method::GET, "/customers") => Self::ListCustomers,
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
        assert_eq!(Route::of(&Method::GET, "/customers", Some("phone=%2B1")), Route::Lookup);
        assert_eq!(Route::of(&Method::GET, "/customers", Some("limit=5&phone=1")), Route::Lookup);
        assert_eq!(Route::of(&Method::GET, "/customers", Some("limit=5")), Route::ListCustomers);
        assert_eq!(Route::of(&Method::GET, "/customers", None), Route::ListCustomers);
        assert_eq!(Route::of(&Method::POST, "/cases", None), Route::CreateCase);
        assert_eq!(Route::of(&Method::GET, "/cases", None), Route::FindCases);
        assert_eq!(Route::of(&Method::POST, "/events", None), Route::PostEvent);
        assert_eq!(Route::of(&Method::POST, "/customers", None), Route::Other);
        assert_eq!(Route::of(&Method::GET, "/nope", None), Route::Other);
    }
}
