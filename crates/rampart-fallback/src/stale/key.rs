//! Cache keys: the default (method, host, URI) or a user-supplied key function, and what a key
//! really costs once stored.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Uri};

use super::cost::heap;

/// A user-supplied key function: maps a request's URI to the part of the cache key that
/// replaces it (the method and host stay in the key), or `None` to leave the request alone
/// (never stored, never answered from the cache).
pub(crate) type KeyFn = Arc<dyn Fn(&Uri) -> Option<String> + Send + Sync>;

/// The URI part of a key.
#[derive(Clone, PartialEq, Eq)]
enum Target {
    /// The whole URI (the default).
    Uri(Uri),
    /// What the key function returned.
    Custom(Box<str>),
}

/// Method, host and URI (or the key function's value): the primary cache key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Key {
    method: Method,
    host: Option<HeaderValue>,
    target: Target,
}

impl Hash for Key {
    /// Without the target's discriminant (one hashing round less per request): keys of the
    /// two kinds that hash alike still differ by `Eq`.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.method.hash(state);
        self.host.hash(state);
        match &self.target {
            Target::Uri(uri) => uri.hash(state),
            Target::Custom(s) => s.hash(state),
        }
    }
}

impl Key {
    /// The key of a request; `None` when the key function leaves it alone.
    pub(crate) fn new(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        key_fn: Option<&KeyFn>,
    ) -> Option<Self> {
        let target = match key_fn {
            None => Target::Uri(uri.clone()),
            Some(f) => Target::Custom(f(uri)?.into_boxed_str()),
        };
        let host = match uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => headers.get(HOST).cloned(),
        };
        Some(Self {
            method: method.clone(),
            host,
            target,
        })
    }

    /// Feeds the key to `state` in a few length-prefixed writes: what the recent-stores
    /// fingerprint hashes (cheaper than the field-by-field [`Hash`], which the cache uses).
    pub(crate) fn hash_compact<H: Hasher>(&self, state: &mut H) {
        fn put<H: Hasher>(state: &mut H, bytes: &[u8]) {
            state.write_usize(bytes.len());
            state.write(bytes);
        }
        if self.method != Method::GET {
            put(state, self.method.as_str().as_bytes());
        }
        match &self.host {
            Some(host) => put(state, host.as_bytes()),
            None => state.write_usize(usize::MAX),
        }
        match &self.target {
            Target::Uri(uri) => {
                if let Some(authority) = uri.authority() {
                    put(state, uri.scheme_str().unwrap_or_default().as_bytes());
                    put(state, authority.as_str().as_bytes());
                }
                let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
                put(state, target.as_bytes());
            }
            Target::Custom(s) => {
                state.write_usize(usize::MAX - 1);
                put(state, s.as_bytes());
            }
        }
    }

    /// The path, for logs.
    pub(crate) fn path(&self) -> &str {
        match &self.target {
            Target::Uri(uri) => uri.path(),
            Target::Custom(s) => s.split('?').next().unwrap_or_default(),
        }
    }

    /// A copy that owns exactly-sized allocations of its own.
    ///
    /// A request's URI and `Host` value usually share the server's read buffer (hyper parses
    /// them as slices of it): a stored key that kept them would keep that whole buffer alive,
    /// many times the key's size.
    pub(crate) fn detached(&self) -> Self {
        let target = match &self.target {
            Target::Uri(uri) => {
                let text: Box<str> = uri.to_string().into_boxed_str();
                let copy = Uri::from_maybe_shared(Bytes::from(text.into_boxed_bytes()));
                Target::Uri(copy.unwrap_or_else(|_| uri.clone()))
            }
            Target::Custom(s) => Target::Custom(s.clone()),
        };
        Self {
            method: self.method.clone(),
            host: self
                .host
                .as_ref()
                .map(|h| HeaderValue::from_bytes(h.as_bytes()).unwrap_or_else(|_| h.clone())),
            target,
        }
    }

    /// What a detached key costs in memory: the key itself (held by the cache in a
    /// reference-counted allocation) and its heap allocations.
    pub(crate) fn weight(&self) -> usize {
        let target = match &self.target {
            Target::Uri(uri) => {
                uri.scheme().map_or(0, |s| s.as_str().len() + 3)
                    + uri.authority().map_or(0, |a| a.as_str().len())
                    + uri.path().len()
                    + uri.query().map_or(0, |q| q.len() + 1)
            }
            Target::Custom(s) => s.len(),
        };
        let method = match self.method {
            Method::GET | Method::HEAD => 0,
            ref m => heap(m.as_str().len()),
        };
        heap(16 + std::mem::size_of::<Self>())
            + heap(target)
            + self.host.as_ref().map_or(0, |h| heap(h.len()))
            + method
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Key");
        d.field("method", &self.method).field("host", &self.host);
        match &self.target {
            Target::Uri(uri) => d.field("uri", uri),
            Target::Custom(s) => d.field("custom", s),
        };
        d.finish()
    }
}

/// A key function for [`StaleIfErrorLayer::key`](super::StaleIfErrorLayer::key): the path,
/// plus only the named query parameters, in the order given (the first occurrence of each).
///
/// Requests that differ only in other parameters (tracking tags, cache busters, random
/// junk) share one stored copy, so a flood of made-up query strings cannot fill the cache
/// with entries of its own. Names and values are compared as sent (percent-encoded).
///
/// ```
/// use rampart_fallback::stale::path_with_params;
///
/// let key = path_with_params(["page", "q"]);
/// let uri = "/products?utm_source=x&page=2&junk=81723".parse().unwrap();
/// assert_eq!(key(&uri).as_deref(), Some("/products?page=2"));
/// let uri = "/search?q=lamp&page=1&x=1".parse().unwrap();
/// assert_eq!(key(&uri).as_deref(), Some("/search?page=1&q=lamp"));
/// assert_eq!(key(&"/cart?junk=1".parse().unwrap()).as_deref(), Some("/cart"));
/// ```
pub fn path_with_params<I, N>(names: I) -> impl Fn(&Uri) -> Option<String> + Clone + Send + Sync
where
    I: IntoIterator<Item = N>,
    N: Into<String>,
{
    let names: Arc<[String]> = names.into_iter().map(Into::into).collect();
    move |uri: &Uri| {
        let path = uri.path();
        let Some(query) = uri.query() else {
            return Some(path.to_owned());
        };
        let mut key = String::with_capacity(path.len() + query.len() + 1);
        key.push_str(path);
        let mut sep = '?';
        for name in names.iter() {
            let found = query.split('&').find(|pair| {
                let n = pair.split_once('=').map_or(*pair, |(n, _)| n);
                n == name
            });
            if let Some(pair) = found {
                key.push(sep);
                key.push_str(pair);
                sep = '&';
            }
        }
        Some(key)
    }
}
