use actix_conditional::viewset::{Action, ViewSet};
use actix_conditional_macros::etag_cached;
use actix_web::{HttpRequest, HttpResponse, web::Bytes};

struct Uploads {
    revision: u64,
}

impl Uploads {
    fn list_revision(&self, _req: &HttpRequest) -> Option<String> {
        Some(self.revision.to_string())
    }

    async fn item_revision(&self, req: &HttpRequest) -> Option<String> {
        Some(format!("{}-{}", self.revision, req.path()))
    }
}

#[etag_cached(max_age = 60, public)]
impl ViewSet for Uploads {
    #[etag_cached(etag = Self::list_revision, vary = ["Accept"])]
    async fn list(&self, req: HttpRequest) -> HttpResponse {
        HttpResponse::Ok().body(req.path().to_owned())
    }

    #[etag_cached(max_age = 5, private, etag = Self::item_revision)]
    async fn retrieve(&self, _req: HttpRequest, id: String) -> HttpResponse {
        if id.is_empty() {
            return HttpResponse::NotFound().finish();
        }
        HttpResponse::Ok().body(id)
    }

    async fn create(&self, _: HttpRequest, body: Bytes) -> HttpResponse {
        HttpResponse::Created().body(body)
    }
}

struct Reports;

#[etag_cached(max_age = 10)]
impl Reports {
    const NAME: &str = "reports";

    fn helper(&self) -> &'static str {
        Self::NAME
    }

    #[actix_conditional_macros::etag_cached(last_modified = Self::modified)]
    async fn show(&self, req: &HttpRequest) -> HttpResponse {
        HttpResponse::Ok().body(format!("{} {}", self.helper(), req.path()))
    }

    async fn summary(req: HttpRequest) -> HttpResponse {
        HttpResponse::Ok().body(req.path().to_owned())
    }
}

// Validator helpers live in a separate block: `#[etag_cached]` rewrites every `async fn` of its own.
impl Reports {
    async fn modified(&self, _req: &HttpRequest) -> Option<std::time::SystemTime> {
        None
    }
}

fn main() {
    assert_eq!(
        <Uploads as ViewSet>::ACTIONS,
        &[Action::List, Action::Retrieve, Action::Create]
    );
    let _ = (Uploads { revision: 1 }, Reports::summary);
}
