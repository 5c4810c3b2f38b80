def test_login_and_pages(admin_client):
    for path in ["/contacts/", "/settings/", "/settings/plugins", "/automations/", "/automations/new",
                 "/automations/runs"]:
        r = admin_client.get(path)
        assert r.status_code == 200, path
