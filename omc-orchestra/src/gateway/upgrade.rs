//! Protocol upgrades (WebSocket): the handshake goes through like any request, then the
//! gateway splices the client's and the upstream's connections together.

use super::answers::error;
use super::pipeline::{Gateway, ProxyInfo};
use super::routes::RouteMatch;
use super::{empty_body, GatewayBody};
use http::header::{HeaderValue, CONNECTION, UPGRADE};
use http::{HeaderMap, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The `Upgrade` header of a request that asks for one (`Connection: upgrade`).
pub(super) fn requested(headers: &HeaderMap) -> Option<HeaderValue> {
    if super::http1::Connection::of(headers).upgrade {
        headers.get(UPGRADE).cloned()
    } else {
        None
    }
}

impl Gateway {
    pub(super) async fn upgrade(
        &self,
        mut parts: http::request::Parts,
        protocol: HeaderValue,
        matched: &RouteMatch,
        info: &mut ProxyInfo,
    ) -> Response<GatewayBody> {
        let service = &*matched.service;
        let Some(client) = parts.extensions.remove::<OnUpgrade>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "upgrade_unsupported",
                "this connection cannot be upgraded",
            );
        };
        let Some((target, instances)) = self.pick(service, &[]) else {
            let message = format!("no healthy instance of `{service}`");
            return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &message);
        };
        info.attempts = 1;
        info.instance = Some(target.id.clone());
        let head = match super::forward::upstream_request(&target, &parts, &matched.upstream_path) {
            Ok(head) => head
                .header(CONNECTION, HeaderValue::from_static("upgrade"))
                .header(UPGRADE, protocol)
                .body(empty_body()),
            Err(message) => return error(StatusCode::BAD_GATEWAY, "bad_gateway", &message),
        };
        let Ok(request) = head else {
            return error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "cannot build the upgrade",
            );
        };
        let sent = self.pool.send_upgrade(&target.authority, request);
        let sent = tokio::time::timeout(matched.route.timeout, sent).await;
        let mut response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(_)) | Err(_) => {
                self.breakers.record(service, &target.id, false, instances);
                let message = format!("the upstream of `{service}` failed the upgrade");
                return error(StatusCode::BAD_GATEWAY, "bad_gateway", &message);
            }
        };
        let ok = !response.status().is_server_error();
        self.breakers.record(service, &target.id, ok, instances);
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return super::forward::relay(response);
        }
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(client, upstream) {
                Ok((client, upstream)) => {
                    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(err) => tracing::debug!(error = %err, "upgrade failed"),
            }
        });
        let (parts, _) = response.into_parts();
        Response::from_parts(parts, empty_body())
    }
}
