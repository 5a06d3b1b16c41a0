//! The viewset router: routes per listed action, HEAD wherever GET is, 405 with `Allow`.

use actix_conditional::viewset::{self, Action, ViewSet, json_body};
use actix_web::dev::Service;
use actix_web::http::{Method, StatusCode, header};
use actix_web::test::{self, TestRequest};
use actix_web::web::Bytes;
use actix_web::{App, HttpRequest, HttpResponse};
use serde::Deserialize;

struct Notes;

#[derive(Deserialize)]
struct NewNote {
    name: String,
}

impl ViewSet for Notes {
    const ACTIONS: &'static [Action] = &[
        Action::List,
        Action::Create,
        Action::Retrieve,
        Action::Destroy,
    ];

    async fn list(&self, _req: HttpRequest) -> HttpResponse {
        HttpResponse::Ok().json(["a", "b"])
    }

    async fn create(&self, _req: HttpRequest, body: Bytes) -> HttpResponse {
        match json_body::<NewNote>(&body) {
            Ok(note) => HttpResponse::Created().json(note.name),
            Err(bad_request) => bad_request,
        }
    }

    async fn retrieve(&self, _req: HttpRequest, id: String) -> HttpResponse {
        HttpResponse::Ok().body(id)
    }

    async fn destroy(&self, _req: HttpRequest, _id: String) -> HttpResponse {
        HttpResponse::NoContent().finish()
    }
}

async fn call(req: TestRequest) -> actix_web::dev::ServiceResponse {
    let app =
        test::init_service(App::new().configure(|cfg| viewset::register(cfg, "/notes/", Notes)))
            .await;
    app.call(req.to_request()).await.unwrap()
}

#[actix_rt::test]
async fn listed_actions_are_routed() {
    assert_eq!(
        call(TestRequest::get().uri("/notes")).await.status(),
        StatusCode::OK
    );
    let res = call(TestRequest::get().uri("/notes/42")).await;
    assert_eq!(test::read_body(res).await, "42");
    let res = call(
        TestRequest::post()
            .uri("/notes")
            .set_payload(r#"{"name":"n"}"#),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        call(TestRequest::delete().uri("/notes/1")).await.status(),
        StatusCode::NO_CONTENT
    );
}

#[actix_rt::test]
async fn head_is_routed_wherever_get_is() {
    for uri in ["/notes", "/notes/7"] {
        let res = call(TestRequest::default().method(Method::HEAD).uri(uri)).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
    }
}

#[actix_rt::test]
async fn unlisted_actions_answer_405_with_allow() {
    let res = call(TestRequest::put().uri("/notes/1")).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        res.headers().get(header::ALLOW).unwrap(),
        "GET, HEAD, DELETE"
    );
    let res = call(TestRequest::patch().uri("/notes")).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers().get(header::ALLOW).unwrap(), "GET, HEAD, POST");
}

#[actix_rt::test]
async fn bad_json_is_a_400_saying_why() {
    for body in ["{not json", r#"{"title":"no name"}"#, r#"{"name":3}"#] {
        let res = call(TestRequest::post().uri("/notes").set_payload(body)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        let json: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(json["error"], "invalid JSON body");
        assert!(json["detail"].as_str().unwrap().len() > 5);
    }
}
