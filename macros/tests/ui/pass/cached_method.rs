use std::sync::Arc;

use actix_conditional::viewset::{Action, ViewSet};
use actix_conditional_macros::etag_cached;
use actix_web::{HttpRequest, HttpResponse, web::Bytes};

mod titles {
    pub(crate) fn of(id: &str) -> String {
        format!("title {id}")
    }
}

#[derive(Clone)]
struct Uploads {
    names: Arc<Vec<String>>,
}

#[etag_cached(max_age = 60, public)]
impl ViewSet for Uploads {
    // The body reads `self`: `Uploads: Clone`, cloned into each build.
    #[etag_cached(cache = "uploads", ttl = 30, vary = ["Accept"])]
    async fn list(&self, req: HttpRequest) -> HttpResponse {
        let count = || self.names.len();
        HttpResponse::Ok().body(format!("{} {}", count(), req.path()))
    }

    // `self::` paths are left alone; `id` is cloned into each build.
    #[etag_cached(cache = "uploads")]
    async fn retrieve(&self, _req: HttpRequest, id: String) -> HttpResponse {
        HttpResponse::Ok().body(self::titles::of(&id))
    }

    async fn create(&self, _: HttpRequest, body: Bytes) -> HttpResponse {
        HttpResponse::Created().body(body)
    }
}

#[derive(Clone)]
struct Plain;

#[etag_cached(max_age = 10)]
impl Plain {
    // A `&mut self` whose body never reads `self`: nothing to clone.
    #[etag_cached(cache = "plain", ttl = 5)]
    async fn show(&mut self, req: &HttpRequest) -> HttpResponse {
        HttpResponse::Ok().body(req.path().to_owned())
    }

    // `self` by value, a nested impl with its own `self`, a pattern parameter.
    #[etag_cached(private, cache = "plain", ttl = 5)]
    async fn consume(self, _: HttpRequest, (a, mut b): (u8, u8)) -> HttpResponse {
        struct Local(u8);
        impl Local {
            fn get(&self) -> u8 {
                self.0
            }
        }
        b += Local(a).get();
        let _ = self;
        HttpResponse::Ok().body(b.to_string())
    }
}

fn main() {
    assert_eq!(
        <Uploads as ViewSet>::ACTIONS,
        &[Action::List, Action::Retrieve, Action::Create]
    );
    let _ = (Uploads { names: Arc::default() }, Plain::show);
}
