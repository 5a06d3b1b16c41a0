# Varnish 7 (with varnish-modules' xkey) in front of an actix-conditional app.
# docs/edge.md explains each part; tests/edge_caches.rs runs this file as shipped, with only
# the backend port (8080) replaced.
#
#   varnishd -a :80 -f /etc/varnish/actix-conditional.vcl
#
# - Tags: the app tags each answer (Surrogate-Key, or xkey); xkey indexes stored objects by
#   them. `PURGE` with `xkey-purge: <tags>` evicts every object carrying one of the tags,
#   `xkey-softpurge: <tags>` marks them stale (served within grace while one fetch refreshes
#   them). Only the addresses in `acl purgers` may purge.
# - Freshness: Surrogate-Control, then CDN-Cache-Control (RFC 9213), then Cache-Control
#   (Varnish's own rules) decide how long an object is kept; the targeted fields are meant for
#   this cache alone and are removed before the answer goes on.
# - Privacy: a request with Cookie or Authorization is looked up apart from anonymous ones,
#   and its answer is stored only if it says `public` and varies on that header (RFC 9111
#   §3.5); anything else goes to the app every time.

vcl 4.1;

import std;
import xkey;

backend app {
    .host = "127.0.0.1";
    .port = "8080";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
}

acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (req.http.xkey-purge) {
            set req.http.x-purged = xkey.purge(req.http.xkey-purge);
        } else if (req.http.xkey-softpurge) {
            set req.http.x-purged = xkey.softpurge(req.http.xkey-softpurge);
        } else {
            return (synth(400, "PURGE needs xkey-purge or xkey-softpurge"));
        }
        # 200 even when nothing was stored under the tags: the purge did what it was asked.
        return (synth(200, "Invalidated " + req.http.x-purged + " objects"));
    }
    if (req.method == "PRI") {
        return (synth(405));
    }
    if (req.method != "GET" && req.method != "HEAD") {
        # Writes always reach the app (and are never stored).
        return (pass);
    }
    # Unlike the built-in VCL, requests with Cookie or Authorization are looked up too (see
    # vcl_hash): the app says whether an answer to them may be shared.
    return (hash);
}

sub vcl_hash {
    hash_data(req.url);
    if (req.http.host) {
        hash_data(req.http.host);
    } else {
        hash_data(server.ip);
    }
    # Credentialed requests never share objects with anonymous ones, in either direction.
    if (req.http.Authorization) {
        hash_data("authorization");
    }
    if (req.http.Cookie) {
        hash_data("cookie");
    }
    return (lookup);
}

sub vcl_backend_fetch {
    unset bereq.http.x-forwarded-because;
}

sub vcl_backend_response {
    # xkey indexes the `xkey` header; Fastly-style apps send Surrogate-Key.
    if (!beresp.http.xkey && beresp.http.Surrogate-Key) {
        set beresp.http.xkey = beresp.http.Surrogate-Key;
    }
    if (bereq.uncacheable) {
        return (deliver);
    }
    if (beresp.http.Set-Cookie || beresp.http.Vary == "*") {
        call hit_for_miss;
    }
    # RFC 9111 §3.5: an answer to a request with Authorization is stored only when it says it
    # may be shared; here, to a request with Cookie too (the app may have personalised it).
    # Stored, it is only served to requests sending the same value (Vary).
    if (bereq.http.Authorization &&
        !(beresp.http.Cache-Control ~ "(?i)(^|[\s,])public($|[\s,])" &&
          beresp.http.Vary ~ "(?i)(^|[\s,])authorization($|[\s,])")) {
        call hit_for_miss;
    }
    if (bereq.http.Cookie &&
        !(beresp.http.Cache-Control ~ "(?i)(^|[\s,])public($|[\s,])" &&
          beresp.http.Vary ~ "(?i)(^|[\s,])cookie($|[\s,])")) {
        call hit_for_miss;
    }
    # RFC 9213: the most specific field this cache recognises wins, and then Cache-Control is
    # ignored for storage. Surrogate-Control (this cache's own), then CDN-Cache-Control.
    if (beresp.http.Surrogate-Control) {
        set beresp.http.x-targeted = beresp.http.Surrogate-Control;
    } else if (beresp.http.CDN-Cache-Control) {
        set beresp.http.x-targeted = beresp.http.CDN-Cache-Control;
    }
    if (beresp.http.x-targeted) {
        if (beresp.http.x-targeted ~ "(?i)(^|[\s,])(no-store|private|no-cache)($|[\s,=])") {
            call hit_for_miss;
        }
        if (beresp.http.x-targeted ~ "(?i)(^|[\s,])max-age=\d+") {
            # The lifetime counts from the answer's age (Age), as for Cache-Control
            # (RFC 9111 §4.2.3): an object that arrives 10 s old with max-age=60 lives 50 s.
            set beresp.ttl = std.duration(
                regsub(beresp.http.x-targeted, "(?i)^(.*[\s,])?max-age=(\d+).*$", "\2") + "s",
                0s) - beresp.age;
        }
        if (beresp.http.x-targeted ~ "(?i)(^|[\s,])stale-while-revalidate=\d+") {
            set beresp.grace = std.duration(
                regsub(beresp.http.x-targeted,
                       "(?i)^(.*[\s,])?stale-while-revalidate=(\d+).*$", "\2") + "s",
                0s);
        }
        # Stale on arrival but declared servable stale (stale-while-revalidate, RFC 5861 §3):
        # stored, and served within that grace while one background fetch refreshes it.
        if (beresp.ttl <= 0s &&
            beresp.http.x-targeted !~ "(?i)(^|[\s,])stale-while-revalidate=0*[1-9]") {
            unset beresp.http.x-targeted;
            call hit_for_miss;
        }
        unset beresp.http.x-targeted;
        return (deliver);
    }
    # Varnish reads stale-while-revalidate from Cache-Control into beresp.grace: an answer the
    # app serves stale (its Age past max-age, covered by that window) is kept, not passed.
    # Without one (max-age=0, must-revalidate) it goes to the app every time, as it asks.
    if ((beresp.ttl <= 0s &&
         beresp.http.Cache-Control !~ "(?i)(^|[\s,])stale-while-revalidate=0*[1-9]") ||
        beresp.http.Cache-Control ~ "(?i)(^|[\s,])(no-cache|no-store|private)($|[\s,=])") {
        call hit_for_miss;
    }
    return (deliver);
}

# Not stored; for two minutes, requests for this object go to the app without waiting for
# one another.
sub hit_for_miss {
    set beresp.ttl = 120s;
    set beresp.uncacheable = true;
    return (deliver);
}

sub vcl_pass {
    set req.http.x-forwarded-because = "bypass";
}

sub vcl_deliver {
    # RFC 9211: this cache's member, after the app's own (nearest the origin first).
    if (obj.hits > 0) {
        set req.http.x-cache-status = "varnish; hit";
    } else if (req.http.x-forwarded-because) {
        set req.http.x-cache-status = "varnish; fwd=bypass";
    } else {
        set req.http.x-cache-status = "varnish; fwd=miss";
    }
    if (resp.http.Cache-Status) {
        set resp.http.Cache-Status = resp.http.Cache-Status + ", " + req.http.x-cache-status;
    } else {
        set resp.http.Cache-Status = req.http.x-cache-status;
    }
    # The targeted fields and tags are for this cache; clients and caches further out get
    # Cache-Control alone (RFC 9213 §2.2: a cache that uses its targeted field may drop it).
    unset resp.http.Surrogate-Control;
    unset resp.http.CDN-Cache-Control;
    unset resp.http.xkey;
    unset resp.http.Surrogate-Key;
    unset resp.http.x-targeted;
    return (deliver);
}

sub vcl_synth {
    if (req.method == "PURGE") {
        set resp.http.Content-Type = "text/plain; charset=utf-8";
        set resp.body = resp.reason + {"
"};
        return (deliver);
    }
}
