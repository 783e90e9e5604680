//! Quick mode without `-r`: `shoal -l ADDR` serves the directory it was started in.

use crate::harness::{Launch, Site};

#[test]
fn without_root_flag_the_current_directory_is_served() {
    let site = Site::new();
    site.file("here.txt", "served from the current directory");
    let server = Launch::listen_only().current_dir(&site.root()).start();
    let response = server.get("/here.txt");
    assert_eq!(
        response.assert_status(200).text(),
        "served from the current directory"
    );
}
