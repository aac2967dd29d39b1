//! Admin routes: which request goes where ([`route`], pure), and the
//! handlers that turn a request into a response through a [`Backend`] (the
//! running process, or anything else that can render metrics, report
//! readiness and change the address map).
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/metrics` | Prometheus text |
//! | GET | `/healthz` | 200 while the process runs |
//! | GET | `/readyz` | 200 when every shard serves and every function is compiled, else 503 + reasons |
//! | GET | `/v1/views` | every view with its prefixes and records, and the map version |
//! | GET, PUT, DELETE | `/v1/views/{view}` | one view; create/replace it; delete it |
//! | GET, POST | `/v1/views/{view}/records` | its records; add one |
//! | PUT, DELETE | `/v1/views/{view}/records/{name}/{type}` | replace / delete a record set (`?data=` deletes one record) |
//! | POST | `/v1/views/{view}/prefixes` | add prefixes |
//! | DELETE | `/v1/views/{view}/prefixes/{prefix}` | remove one (`10.1.0.7/32` may stay unescaped) |
//! | POST | `/v1/changes` | several changes at once, all or none |
//! | POST | `/v1/reload` | what SIGHUP does |
//! | GET | `/v1/state` | the persisted changes |
//!
//! With a token configured, everything but `/healthz` and `/readyz` needs
//! `Authorization: Bearer <token>`.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{Config, Problem};

use super::http::{constant_time_eq, percent_decode, Request, Response};
use crate::mapstore::overlay::{record_from_config, Change, Overlay, Record, RecordData};
use crate::mapstore::store::{Applied, Refused};

/// Readiness as the backend sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Why the process is not ready; empty = ready.
    pub waiting_for: Vec<String>,
    /// Ready, but serving with a handicap (e.g. etcd unreachable: the last
    /// applied fleet map keeps serving).
    pub degraded: Vec<String>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    Swapped { version: u64 },
    NothingToReload,
    Rejected(Vec<Problem>),
}

/// The process behind the admin API.
pub trait Backend: Send + Sync {
    /// The `/metrics` payload.
    fn metrics(&self) -> String;
    fn readiness(&self) -> Readiness;
    /// The served configuration (config + API changes), the API changes
    /// alone, the map version served, and where changes are persisted.
    fn map(&self) -> (Config, Overlay, u64, Option<String>);
    /// Apply changes (all or none), persisted before this returns.
    /// `read_revision`: the fleet map revision the caller read, if any.
    fn change(&self, changes: &[Change], read_revision: Option<u64>) -> Result<Applied, Refused>;
    /// Reload the configuration file, as SIGHUP does.
    fn reload(&self) -> Reloaded;
    /// The map version served now.
    fn version(&self) -> u64;
    /// The fleet map revision applied here (`[cluster]` only).
    fn revision(&self) -> Option<u64> {
        None
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Healthz,
    Readyz,
    Views,
    View(String),
    Records(String),
    RecordSet {
        view: String,
        name: String,
        rtype: String,
    },
    Prefixes(String),
    Prefix {
        view: String,
        prefix: String,
    },
    Changes,
    Reload,
    State,
}

impl Route {
    /// Short name for the metrics `route` label (bounded cardinality).
    pub fn label(&self) -> &'static str {
        match self {
            Route::Metrics => "metrics",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Views => "views",
            Route::View(_) => "view",
            Route::Records(_) => "records",
            Route::RecordSet { .. } => "record_set",
            Route::Prefixes(_) => "prefixes",
            Route::Prefix { .. } => "prefix",
            Route::Changes => "changes",
            Route::Reload => "reload",
            Route::State => "state",
        }
    }

    /// Methods the route accepts (for 405 `Allow`).
    fn allowed(&self) -> &'static str {
        match self {
            Route::Metrics | Route::Healthz | Route::Readyz | Route::Views | Route::State => {
                "GET, HEAD"
            }
            Route::View(_) => "GET, HEAD, PUT, DELETE",
            Route::Records(_) => "GET, HEAD, POST",
            Route::RecordSet { .. } => "GET, HEAD, PUT, DELETE",
            Route::Prefixes(_) => "GET, HEAD, POST",
            Route::Prefix { .. } => "DELETE",
            Route::Changes | Route::Reload => "POST",
        }
    }

    /// Open without a token (probes).
    fn public(&self) -> bool {
        matches!(self, Route::Healthz | Route::Readyz)
    }
}

/// Map a path to a route; `None` = 404.
pub fn route(path: &str) -> Option<Route> {
    let raw: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut segs = Vec::with_capacity(raw.len());
    for s in &raw {
        segs.push(percent_decode(s)?);
    }
    // A trailing slash is tolerated.
    if segs.len() > 1 && segs.last().is_some_and(|s| s.is_empty()) {
        segs.pop();
    }
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    Some(match s.as_slice() {
        ["metrics"] => Route::Metrics,
        ["healthz"] => Route::Healthz,
        ["readyz"] => Route::Readyz,
        ["v1", "views"] => Route::Views,
        ["v1", "views", view] if !view.is_empty() => Route::View(view.to_string()),
        ["v1", "views", view, "records"] => Route::Records(view.to_string()),
        ["v1", "views", view, "records", name, rtype] => Route::RecordSet {
            view: view.to_string(),
            name: name.to_string(),
            rtype: rtype.to_string(),
        },
        ["v1", "views", view, "prefixes"] => Route::Prefixes(view.to_string()),
        ["v1", "views", view, "prefixes", rest @ ..] if !rest.is_empty() => Route::Prefix {
            view: view.to_string(),
            prefix: rest.join("/"),
        },
        ["v1", "changes"] => Route::Changes,
        ["v1", "reload"] => Route::Reload,
        ["v1", "state"] => Route::State,
        _ => return None,
    })
}

/// Handle one request. Returns the response and the route label (for the
/// admin request counter).
pub fn handle(
    req: &Request,
    backend: &dyn Backend,
    token: Option<&str>,
) -> (Response, &'static str) {
    let Some(route) = route(&req.path) else {
        return (
            Response::error(
                404,
                &format!(
                    "no such path {:?}; see GET /v1/views, /metrics, /healthz, /readyz",
                    req.path
                ),
            ),
            "unknown",
        );
    };
    let label = route.label();
    if let Some(token) = token {
        if !route.public() && !authorized(req, token) {
            let resp = Response::error(
                401,
                "missing or wrong bearer token: send Authorization: Bearer <server.admin_token>",
            )
            .with_header("WWW-Authenticate", "Bearer realm=\"shardgate\"");
            return (resp, label);
        }
    }
    let method = if req.method == "HEAD" {
        "GET"
    } else {
        req.method.as_str()
    };
    let resp = dispatch(&route, method, req, backend).unwrap_or_else(|| {
        Response::error(
            405,
            &format!(
                "{} is not allowed here; use {}",
                req.method,
                route.allowed()
            ),
        )
        .with_header("Allow", route.allowed())
    });
    (resp, label)
}

fn authorized(req: &Request, token: &str) -> bool {
    let Some(value) = req.authorization.as_deref() else {
        return false;
    };
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

/// `None` = method not allowed on this route.
fn dispatch(route: &Route, method: &str, req: &Request, b: &dyn Backend) -> Option<Response> {
    Some(match (route, method) {
        (Route::Metrics, "GET") => {
            let mut r = Response::text(200, "");
            r.body = b.metrics().into_bytes();
            r.content_type = "text/plain; version=0.0.4; charset=utf-8";
            r
        }
        (Route::Healthz, "GET") => Response::text(200, "ok\n"),
        (Route::Readyz, "GET") => {
            let r = b.readiness();
            if r.waiting_for.is_empty() && r.degraded.is_empty() {
                Response::text(200, "ready\n")
            } else if r.waiting_for.is_empty() {
                Response::json(200, &json!({ "ready": true, "degraded": r.degraded }))
            } else {
                Response::json(
                    503,
                    &json!({ "ready": false, "waiting_for": r.waiting_for }),
                )
            }
        }
        (Route::Views, "GET") => {
            let (config, _, version, _) = b.map();
            let views: Vec<Value> = config.views.iter().map(view_json).collect();
            let mut reply = json!({ "version": version, "views": views });
            if let Some(r) = b.revision() {
                reply["revision"] = json!(r);
            }
            Response::json(200, &reply)
        }
        (Route::View(view), "GET") => match find_view(b, view) {
            Ok(v) => Response::json(200, &v),
            Err(r) => r,
        },
        (Route::Records(view), "GET") => match find_view(b, view) {
            Ok(v) => Response::json(200, &json!({ "view": view, "records": v["records"] })),
            Err(r) => r,
        },
        (Route::Prefixes(view), "GET") => match find_view(b, view) {
            Ok(v) => Response::json(
                200,
                &json!({ "view": view, "prefixes": v["prefixes"], "prefixes_file": v["prefixes_file"] }),
            ),
            Err(r) => r,
        },
        (Route::RecordSet { view, name, rtype }, "GET") => match find_view(b, view) {
            Ok(v) => {
                let want_name = crate::mapstore::overlay::canonical_name(name);
                let records: Vec<&Value> = v["records"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| {
                        r["name"]
                            .as_str()
                            .map(crate::mapstore::overlay::canonical_name)
                            .as_deref()
                            == Some(want_name.as_str())
                            && r["type"]
                                .as_str()
                                .is_some_and(|t| t.eq_ignore_ascii_case(rtype))
                    })
                    .collect();
                if records.is_empty() {
                    Response::error(
                        404,
                        &format!("view {view:?} has no {rtype} records for {want_name}"),
                    )
                } else {
                    Response::json(200, &json!({ "view": view, "records": records }))
                }
            }
            Err(r) => r,
        },
        (Route::View(view), "PUT") => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                #[serde(default)]
                prefixes: Vec<String>,
                #[serde(default)]
                records: Vec<Record>,
            }
            match body::<Body>(req) {
                Ok(body) => change(
                    b,
                    req,
                    vec![Change::PutView {
                        view: view.clone(),
                        prefixes: body.prefixes,
                        records: body.records,
                    }],
                ),
                Err(r) => r,
            }
        }
        (Route::View(view), "DELETE") => {
            change(b, req, vec![Change::DeleteView { view: view.clone() }])
        }
        (Route::Records(view), "POST") => match body::<Record>(req) {
            Ok(record) => change(
                b,
                req,
                vec![Change::AddRecord {
                    view: view.clone(),
                    record,
                }],
            ),
            Err(r) => r,
        },
        (Route::RecordSet { view, name, rtype }, "PUT") => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                records: Vec<RecordData>,
            }
            match body::<Body>(req) {
                Ok(body) => change(
                    b,
                    req,
                    vec![Change::ReplaceRecords {
                        view: view.clone(),
                        name: name.clone(),
                        rtype: rtype.clone(),
                        records: body.records,
                    }],
                ),
                Err(r) => r,
            }
        }
        (Route::RecordSet { view, name, rtype }, "DELETE") => change(
            b,
            req,
            vec![Change::DeleteRecords {
                view: view.clone(),
                name: name.clone(),
                rtype: rtype.clone(),
                data: req.query_param("data"),
            }],
        ),
        (Route::Prefixes(view), "POST") => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                #[serde(default)]
                prefix: Option<String>,
                #[serde(default)]
                prefixes: Vec<String>,
            }
            match body::<Body>(req) {
                Ok(body) => {
                    let mut prefixes = body.prefixes;
                    prefixes.extend(body.prefix);
                    change(
                        b,
                        req,
                        vec![Change::AddPrefixes {
                            view: view.clone(),
                            prefixes,
                        }],
                    )
                }
                Err(r) => r,
            }
        }
        (Route::Prefix { view, prefix }, "DELETE") => change(
            b,
            req,
            vec![Change::RemovePrefixes {
                view: view.clone(),
                prefixes: vec![prefix.clone()],
            }],
        ),
        (Route::Changes, "POST") => {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Body {
                List(Vec<Change>),
                Wrapped { changes: Vec<Change> },
            }
            match body::<Body>(req) {
                Ok(Body::List(c)) | Ok(Body::Wrapped { changes: c }) => change(b, req, c),
                Err(r) => r,
            }
        }
        (Route::Reload, "POST") => match b.reload() {
            Reloaded::Swapped { version } => {
                Response::json(200, &json!({ "reloaded": true, "version": version }))
            }
            Reloaded::NothingToReload => Response::json(
                409,
                &json!({ "error": "running on the embedded default configuration: there is no file to reload (start with --config FILE)", "version": b.version() }),
            ),
            Reloaded::Rejected(problems) => Response::json(
                400,
                &json!({ "error": "the configuration was rejected; the previous one keeps serving", "problems": problems_json(&problems), "version": b.version() }),
            ),
        },
        (Route::State, "GET") => {
            let (_, overlay, version, file) = b.map();
            Response::json(
                200,
                &json!({ "version": version, "state_file": file, "changes": overlay }),
            )
        }
        _ => return None,
    })
}

fn view_json(v: &crate::config::ViewConfig) -> Value {
    let records: Vec<Record> = v.records.iter().map(record_from_config).collect();
    json!({
        "name": v.name,
        "prefixes": v.prefixes,
        "prefixes_file": v.prefixes_file.as_ref().map(|p| p.display().to_string()),
        "records": records,
    })
}

fn find_view(b: &dyn Backend, view: &str) -> Result<Value, Response> {
    let (config, _, version, _) = b.map();
    match config.views.iter().find(|v| v.name == view) {
        Some(v) => {
            let mut j = view_json(v);
            j["version"] = json!(version);
            if let Some(r) = b.revision() {
                j["revision"] = json!(r);
            }
            Ok(j)
        }
        None => Err(Response::error(404, &format!("no view named {view:?}"))),
    }
}

/// Parse a JSON body; 400 naming what is wrong.
fn body<T: for<'de> Deserialize<'de>>(req: &Request) -> Result<T, Response> {
    if req.body.is_empty() {
        return Err(Response::error(400, "this request needs a JSON body"));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| Response::error(400, &format!("invalid JSON body: {e}")))
}

fn problems_json(problems: &[Problem]) -> Vec<Value> {
    problems
        .iter()
        .map(|p| json!({ "key": p.key, "line": p.line, "message": p.message }))
        .collect()
}

fn change(b: &dyn Backend, req: &Request, changes: Vec<Change>) -> Response {
    // `?revision=N`: the fleet map revision the caller read (`[cluster]`);
    // the change is refused with 409 if what it touches changed since.
    let read_revision = match req.query_param("revision") {
        None => None,
        Some(text) => match text.parse::<u64>() {
            Ok(r) => Some(r),
            Err(_) => {
                let m = format!("?revision={text:?} is not a revision: pass one a GET replied");
                return Response::error(400, &m);
            }
        },
    };
    let result = b.change(&changes, read_revision);
    crate::metrics::record_map_change(match &result {
        Ok(_) => "ok",
        Err(Refused::Persist(_)) => "failed",
        Err(Refused::Conflict(_)) => "conflict",
        Err(Refused::Unavailable(_)) => "unavailable",
        Err(_) => "rejected",
    });
    match result {
        Ok(Applied {
            version,
            warning,
            revision,
        }) => {
            let mut reply = json!({
                "changed": version.is_some(),
                "version": version.unwrap_or_else(|| b.version()),
            });
            if let Some(r) = revision {
                reply["revision"] = json!(r);
            }
            if let Some(w) = warning {
                reply["durable"] = json!(false);
                reply["warning"] = json!(w);
            }
            Response::json(200, &reply)
        }
        Err(Refused::Change(e)) => Response::error(e.status, &e.message),
        Err(Refused::Invalid(problems)) => Response::json(
            400,
            &json!({ "error": "the change would make the address map invalid; nothing was applied", "problems": problems_json(&problems) }),
        ),
        Err(Refused::Persist(m)) => Response::error(500, &m),
        Err(Refused::Conflict(m)) => Response::error(409, &m),
        Err(Refused::Unavailable(m)) => Response::error(503, &m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_paths() {
        assert_eq!(route("/metrics"), Some(Route::Metrics));
        assert_eq!(route("/v1/views/"), Some(Route::Views));
        assert_eq!(
            route("/v1/views/inst%2D7"),
            Some(Route::View("inst-7".into()))
        );
        assert_eq!(
            route("/v1/views/a/records/upf.svc.example./A"),
            Some(Route::RecordSet {
                view: "a".into(),
                name: "upf.svc.example.".into(),
                rtype: "A".into()
            })
        );
        assert_eq!(
            route("/v1/views/a/prefixes/10.1.0.7/32"),
            Some(Route::Prefix {
                view: "a".into(),
                prefix: "10.1.0.7/32".into()
            })
        );
        assert_eq!(
            route("/v1/views/a/prefixes/fd00::7%2F128"),
            Some(Route::Prefix {
                view: "a".into(),
                prefix: "fd00::7/128".into()
            })
        );
        assert_eq!(
            route("/v1/views/a/prefixes/"),
            Some(Route::Prefixes("a".into()))
        );
        assert_eq!(
            route("/v1/views//records"),
            Some(Route::Records(String::new()))
        );
        assert_eq!(route("/v1/nope"), None);
        assert_eq!(route("/v1/views/%zz"), None);
        assert_eq!(route("/"), None);
    }

    #[test]
    fn checks_bearer_tokens() {
        let req = |auth: Option<&str>| Request {
            method: "GET".into(),
            path: "/metrics".into(),
            query: None,
            authorization: auth.map(str::to_owned),
            keep_alive: true,
            ..Request::default()
        };
        assert!(authorized(&req(Some("Bearer s3cret")), "s3cret"));
        assert!(authorized(&req(Some("bearer  s3cret ")), "s3cret"));
        assert!(!authorized(&req(Some("Bearer s3cre")), "s3cret"));
        assert!(!authorized(&req(Some("Basic s3cret")), "s3cret"));
        assert!(!authorized(&req(None), "s3cret"));
        assert!(Route::Readyz.public() && !Route::Metrics.public() && !Route::Reload.public());
    }
}
