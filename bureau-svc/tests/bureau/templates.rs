//! Onboarding units and their templates through CreateCardTemplate.

use fiscalbill_common::db::test_support;
use fiscalbill_common::proto::bureau as pb;

use crate::support::*;

/// A PNG other than the demo logo (the configured unit's).
fn court_logo() -> Vec<u8> {
    let mut png = wechat_sandbox::DEMO_LOGO_PNG.to_vec();
    png.extend_from_slice(b"court");
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_created_once_per_unit_and_never_changed() {
    let mut env = Env::start(test_support::sqlite()).await;
    let create = |appid: &str, payee: &str| pb::CreateCardTemplateRequest {
        unit_appid: appid.into(),
        payee: payee.into(),
        logo_url: String::new(),
        logo_image: court_logo().into(),
    };
    let status =
        env.client.get_card_template(pb::GetCardTemplateRequest { unit_appid: OTHER_UNIT.into() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    let first = env.client.create_card_template(create(OTHER_UNIT, "沙箱市中级人民法院")).await.unwrap().into_inner();
    assert!(first.created);
    let template = first.template.unwrap();
    assert_eq!(template.card_id.len(), 28);
    // The image went through WeChat's image upload; the template carries the URL it answered.
    assert_eq!(env.calls("/cgi-bin/media/uploadimg").await, 1);
    assert!(template.logo_url.contains("/mmbiz/"), "{}", template.logo_url);
    assert_eq!(template.logo_sha256.len(), 64);
    let served = env.http.get(&template.logo_url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(served.as_ref(), court_logo().as_slice());
    let again = env.client.create_card_template(create(OTHER_UNIT, "沙箱市中级人民法院")).await.unwrap().into_inner();
    assert!(!again.created);
    assert_eq!(again.template.unwrap().card_id, template.card_id);
    let status = env.client.create_card_template(create(OTHER_UNIT, "另一个名字")).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::FailedPrecondition, "TEMPLATE_CONFLICT"));
    assert_eq!(env.calls("/nontax/createbillcard").await, 1);
    assert_eq!(env.calls("/cgi-bin/media/uploadimg").await, 1, "uploaded once");

    // The configured unit gets its template through CreateCardTemplate too, with its own logo.
    let configured = env.client.create_card_template(create(UNIT, "沙箱市人民医院")).await.unwrap_err();
    assert_eq!(reason(&configured), "TEMPLATE_CONFLICT", "the configuration's logo differs");
    let unit = pb::CreateCardTemplateRequest {
        unit_appid: UNIT.into(),
        payee: "沙箱市人民医院".into(),
        logo_url: String::new(),
        logo_image: wechat_sandbox::DEMO_LOGO_PNG.to_vec().into(),
    };
    assert!(env.client.create_card_template(unit).await.unwrap().into_inner().created);

    // A logo already on WeChat's image host is taken as it is, without an upload.
    let by_url = pb::CreateCardTemplateRequest {
        unit_appid: THIRD_UNIT.into(),
        payee: "沙箱市水务集团".into(),
        logo_url: template.logo_url.clone(),
        logo_image: Default::default(),
    };
    let third = env.client.create_card_template(by_url).await.unwrap().into_inner().template.unwrap();
    assert_eq!((third.logo_url.as_str(), third.logo_sha256.as_str()), (template.logo_url.as_str(), ""));
    assert_eq!(env.calls("/cgi-bin/media/uploadimg").await, 2, "only the configured unit's image since");

    let page = env
        .client
        .list_card_templates(pb::ListCardTemplatesRequest { page_size: 1, page_token: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.templates.len(), 1);
    assert_eq!(page.templates[0].unit_appid, UNIT);
    let rest = env
        .client
        .list_card_templates(pb::ListCardTemplatesRequest { page_size: 2, page_token: page.next_page_token })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.templates[0].unit_appid, OTHER_UNIT);
    assert_eq!(rest.templates[1].unit_appid, THIRD_UNIT);
    assert!(rest.next_page_token.is_empty());

    for (logo_url, logo_image, field) in [
        ("http://plain", Vec::new(), "logo_url"),
        ("https://example.org/logo.png", Vec::new(), "logo_url"),
        ("", Vec::new(), "logo_url"),
        ("", b"GIF89a".to_vec(), "logo_image"),
        ("http://mmbiz.qpic.cn/mmbiz/x/0", court_logo(), "logo_image"),
    ] {
        let invalid = env
            .client
            .create_card_template(pb::CreateCardTemplateRequest {
                unit_appid: "x".into(),
                payee: "".into(),
                logo_url: logo_url.into(),
                logo_image: logo_image.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(violations(&invalid), ["unit_appid", "payee", field], "{logo_url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_until_the_database_answers() {
    // A PostgreSQL that does not listen.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let db = fiscalbill_common::db::DatabaseConfig {
        url: format!("postgres://postgres@127.0.0.1:{port}/none"),
        acquire_timeout_ms: 300,
        ..Default::default()
    };
    let bureau =
        tokio::task::spawn_blocking(move || Bureau::start(bureau_config("http://127.0.0.1:9", &db, &fast_issuing())))
            .await
            .unwrap();
    let channel = connect(bureau.grpc_addr).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status =
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(status.status, tonic_health::pb::health_check_response::ServingStatus::NotServing as i32);
    let status = client_for(channel).issue_bill(request("o-early")).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::Unavailable, "NOT_READY"));
    tokio::task::spawn_blocking(move || bureau.stop()).await.unwrap();
}
