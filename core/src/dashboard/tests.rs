use super::*;
use crate::config::Secrets;
use crate::testing::{config_value, secrets};
use serde_json::json;

fn with_admin() -> Config {
    let mut v = config_value();
    v["admin"] = json!({"api_key_secret": "EDGEGATE_ADMIN_KEY"});
    let mut s: Secrets = secrets();
    s.insert(
        "EDGEGATE_ADMIN_KEY".into(),
        "admin-key-for-the-dashboard-tests-01".into(),
    );
    Config::from_json(&v.to_string(), &s).expect("valid")
}

fn header<'r>(r: &'r LocalResponse, name: &str) -> Option<&'r str> {
    r.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn get(config: &Config, path: &str, headers: &Headers) -> LocalResponse {
    serve(config, "GET", path, headers, "req_1")
}

#[test]
fn the_page_and_its_assets_are_served_with_their_types_when_the_admin_api_is_on() {
    let config = with_admin();
    let none = Headers::default();
    for (path, kind, starts) in [
        ("/dashboard", "text/html", "<!doctype html>"),
        ("/dashboard/", "text/html", "<!doctype html>"),
        ("/dashboard/app.js", "text/javascript", ""),
        ("/dashboard/app.css", "text/css", ""),
    ] {
        let r = get(&config, path, &none);
        assert_eq!(r.status, 200, "{path}");
        assert!(
            header(&r, "content-type").is_some_and(|t| t.starts_with(kind)),
            "{path}"
        );
        assert!(r.body.starts_with(starts) && r.body.len() > 1000, "{path}");
        assert_eq!(header(&r, "cache-control"), Some("no-cache"));
        assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
    }
    let page = get(&config, "/dashboard", &none);
    let csp = header(&page, "content-security-policy").expect("a CSP on the page");
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
    // The page loads its own bundle, nothing from elsewhere.
    assert!(page.body.contains("src=\"/dashboard/app.js\""));
    assert!(!page.body.contains("http://") && !page.body.contains("https://"));
}

#[test]
fn a_known_etag_is_answered_304_without_a_body() {
    let config = with_admin();
    let first = get(&config, "/dashboard/app.js", &Headers::default());
    let etag = header(&first, "etag").expect("an etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    let again = Headers::new([("if-none-match", format!("W/\"x\", {etag}"))]);
    let r = get(&config, "/dashboard/app.js", &again);
    assert_eq!((r.status, r.body.as_str()), (304, ""));
    let other = Headers::new([("if-none-match", "\"other\"".to_owned())]);
    assert_eq!(get(&config, "/dashboard/app.js", &other).status, 200);
}

#[test]
fn off_without_the_admin_api_and_unknown_assets_are_404() {
    let off = Config::from_json(&config_value().to_string(), &secrets()).expect("valid");
    assert_eq!(get(&off, "/dashboard", &Headers::default()).status, 404);
    let on = with_admin();
    for path in [
        "/dashboard/nope.js",
        "/dashboard/../admin/v1/usage",
        "/dashboard/app.js/x",
    ] {
        assert_eq!(get(&on, path, &Headers::default()).status, 404, "{path}");
    }
}

#[test]
fn other_methods_are_405_naming_get_and_head() {
    let r = serve(
        &with_admin(),
        "POST",
        "/dashboard",
        &Headers::default(),
        "req_1",
    );
    assert_eq!(r.status, 405);
    assert_eq!(header(&r, "allow"), Some("GET, HEAD"));
}

#[test]
fn only_the_dashboards_paths_are_its() {
    for path in ["/dashboard", "/dashboard/", "/dashboard/app.js"] {
        assert!(is_dashboard_path(path), "{path}");
    }
    for path in ["/dashboards", "/dashboardx/app.js", "/v1/dashboard", "/"] {
        assert!(!is_dashboard_path(path), "{path}");
    }
}
