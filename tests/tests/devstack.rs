//! The development stack: `cargo run -- demo` and what `cargo run` writes for scripts.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_a_full_flow() {
    devstack::demo::run().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_describes_itself_for_scripts() {
    let data_dir = std::env::temp_dir().join(format!("fiscalbill-devstack-test-{}", std::process::id()));
    let stack = devstack::start(devstack::Addresses::any_free(), data_dir.clone()).await.unwrap();
    let addresses = stack.addresses.clone();
    assert!(addresses.collection_http.port() != 0 && addresses.bureau_grpc.port() != 0, "the bound ports");
    let s_pappid = stack.s_pappid().await.unwrap();
    let description = stack.description(&s_pappid);
    assert_eq!(description["collection"]["grpc"], addresses.collection_grpc.to_string());
    assert_eq!(description["bureau"]["grpc"], addresses.bureau_grpc.to_string());
    assert_eq!(description["sandbox"]["url"], format!("http://{}", addresses.sandbox));
    assert_eq!(description["s_pappid"].as_str().unwrap().len(), 68);
    let unit = description["accounts"].as_array().unwrap().iter().find(|a| a["appid"] == "wxc0000000000000c1").unwrap();
    assert_eq!(
        unit["callback_url"],
        format!("http://{}/wechat/callback/wxc0000000000000c1", addresses.collection_http)
    );
    assert_eq!(unit["push_mode"], "safe");
    assert!(unit["encoding_aes_key"].as_str().unwrap().len() == 43);
    stack.stop().await;
    assert!(data_dir.join("bureau.db").exists() && data_dir.join("collection.db").exists());
    let _ = std::fs::remove_dir_all(data_dir);
}
