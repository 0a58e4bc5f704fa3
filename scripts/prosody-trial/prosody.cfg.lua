run_as_root = true
daemonize = false
pidfile = "@WORK@/prosody.pid"
data_path = "@WORK@/data"
plugin_paths = { "/usr/lib/prosody/modules" }
interfaces = { "127.0.0.1" }
c2s_ports = { 15222 }
s2s_ports = { }
http_ports = { 15280 }
http_interfaces = { "127.0.0.1" }
https_ports = { }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
log = { debug = "@WORK@/prosody.log" }
modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "posix" }
modules_disabled = { "s2s" }
VirtualHost "localhost"
Component "upload.localhost" "http_upload_external"
    http_upload_external_base_url = "http://127.0.0.1:18443/upload/"
    http_upload_external_secret = "@SECRET@"
    http_upload_external_protocol = "v2"
    http_upload_external_file_size_limit = 10485760
Component "share.localhost" "http_file_share"
    http_file_share_secret = "@SECRET@"
    http_file_share_base_url = "http://127.0.0.1:18443/upload/"
    http_file_share_size_limit = 10485760
