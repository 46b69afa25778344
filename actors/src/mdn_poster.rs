//! MdnPoster: POSTs built asynchronous MDNs (queue `edinode.mdn_post`) to the address the
//! partner asked for, on its own queue and concurrency so that no partner's slow or silent MDN
//! endpoint can delay another partner's synchronous MDN. Before each POST the address is checked
//! again against the partner's allow-list, a host name is resolved and refused when it leads to
//! an internal address (unless the partner allows it), and the connection goes to exactly the
//! addresses checked. Redirects are never followed. Failed attempts are retried by the runner
//! with a delayed redelivery (`mdn.async_post_attempts`, `mdn.async_retry_base_ms`); the MDN
//! keeps its Message-ID on every attempt because it was built once, by the MdnSender.

use crate::{queues, Actor, Binding, ActorError, NodeContext, Out};
use edinode_proto::envelope::AsyncMdn;
use edinode_proto::profile::{is_internal, HttpProfile, MdnTarget};
use std::time::Duration;

/// The MdnPoster and its settings.
pub struct MdnPoster {
    /// Time limit of one POST (connect and answer).
    pub timeout: Duration,
}

/// A client builder with a partner's TLS settings (its CA, our client certificate), no
/// redirects, and the given time limit.
pub(crate) fn client_builder(http: &HttpProfile, timeout: Duration) -> Result<reqwest::ClientBuilder, String> {
    let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(timeout).connect_timeout(timeout.min(Duration::from_secs(30)));
    if let Some(ca) = &http.ca_pem {
        for c in reqwest::Certificate::from_pem_bundle(ca).map_err(|e| format!("partner CA: {e}"))? {
            b = b.add_root_certificate(c);
        }
    }
    if let Some(id) = &http.client_identity_pem {
        b = b.identity(reqwest::Identity::from_pem(id).map_err(|e| format!("client certificate: {e}"))?);
    }
    Ok(b)
}

impl MdnPoster {
    /// A client that can reach only the checked addresses of `url`.
    async fn client(&self, cx: &NodeContext, m: &AsyncMdn) -> Result<reqwest::Client, ActorError> {
        let partner = cx
            .directory
            .partner(&m.ctx.request.as2_to, &m.ctx.request.as2_from)
            .ok_or_else(|| ActorError::Permanent(format!("partner {} is no longer configured", m.ctx.request.as2_from)))?;
        let target = partner.mdn_urls.check(&m.url).map_err(|e| ActorError::Permanent(format!("asynchronous MDN to {} withheld: {e}", m.url)))?;
        let b = client_builder(&partner.outbound.http, self.timeout).map_err(ActorError::Permanent)?;
        let b = match target {
            // Written in the allow-list as an address: allowed as written.
            MdnTarget::Ip(_) => b,
            MdnTarget::Name { host, port, private_ok } => {
                let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map_err(|e| ActorError::Transient(format!("cannot resolve {host}: {e}")))?
                    .collect();
                if addrs.is_empty() {
                    return Err(ActorError::Transient(format!("{host} resolves to no address")));
                }
                if !private_ok && let Some(a) = addrs.iter().find(|a| is_internal(a.ip())) {
                    return Err(ActorError::Permanent(format!("asynchronous MDN to {} withheld: {host} resolves to the internal address {}", m.url, a.ip())));
                }
                // Connect to exactly the addresses checked (no second, different lookup).
                b.resolve_to_addrs(&host, &addrs)
            }
        };
        b.build().map_err(|e| ActorError::Permanent(e.to_string()))
    }
}

impl Actor for MdnPoster {
    const BINDING: Binding = Binding::new("mdn_poster", queues::MDN_POST);
    type Input = AsyncMdn;

    async fn handle(&self, cx: &NodeContext, m: AsyncMdn) -> Result<Vec<Out>, ActorError> {
        crate::describe(&m.ctx);
        // One MDN per reception: a second chain (or a redelivery) finds it already posted.
        let posted = format!("mdnposted:{}", m.ctx.id);
        if cx.state.get(&posted).await?.is_some() {
            tracing::info!(message = "Asynchronous MDN already posted for this reception.", id = %m.ctx.id);
            return Ok(vec![]);
        }
        let client = match self.client(cx, &m).await {
            Ok(c) => c,
            Err(ActorError::Permanent(reason)) => {
                tracing::warn!(message = "Asynchronous MDN withheld.", %reason, partner = %m.ctx.partner);
                cx.status(&m.ctx.id, "mdn-withheld", &reason).await;
                return Err(ActorError::Permanent(reason));
            }
            Err(e) => return Err(e),
        };
        let mut req = client.post(&m.url);
        for (k, v) in &m.mdn.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.body(m.mdn.body.clone()).send().await.map_err(|e| ActorError::Transient(format!("async MDN POST to {} failed: {e}", m.url)))?;
        let code = resp.status();
        if code.is_success() {
            if let Err(error) = cx.state.set_once(&posted, &code.as_u16().to_string(), 30 * 24 * 3600).await {
                tracing::warn!(message = "Could not record a posted MDN.", %error);
            }
            cx.status(&m.ctx.id, "mdn-sent", &format!("async to {} ({})", m.url, code.as_u16())).await;
            Ok(vec![])
        } else if code.is_server_error() || code.as_u16() == 429 || code.as_u16() == 408 {
            Err(ActorError::Transient(format!("async MDN POST to {} answered {}", m.url, code)))
        } else {
            cx.status(&m.ctx.id, "mdn-failed", &format!("async to {} answered {}", m.url, code)).await;
            Err(ActorError::Permanent(format!("async MDN POST to {} answered {}", m.url, code)))
        }
    }
}
