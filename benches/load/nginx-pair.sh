# The nginx pair peergate is compared with, written once for run.sh and callgrind.sh (sourced):
# nginx B ends TLS and proxies to the app, as bob's inbound listener does; nginx A takes plain
# HTTP from the app under /peers/bob/ and proxies to B over TLS, the certificate verified
# against the test CA, connections pooled, as alice's outbound listener does.
#
#   nginx_pair_confs DIR APP_PORT NGA_PORT NGB_PORT WORKERS LOG_DIR|off
#
# writes DIR/nga.conf and DIR/ngb.conf (and their temporary directories), with WORKERS worker
# processes and an access log per proxy in LOG_DIR (`off`: none). Expects DIR/cert.pem,
# DIR/key.pem and DIR/ca.pem.

nginx_common() { # dir name workers log_dir|off
    local access="access_log off;"
    [ "$4" != off ] && access="access_log $4/$2.access.log;"
    mkdir -p "$1/$2-tmp"
    cat <<CONF
worker_processes $3;
user root root;
pid $1/$2.pid;
error_log $1/$2.error.log warn;
events { worker_connections 4096; }
http {
    $access
    client_body_temp_path $1/$2-tmp/body;
    proxy_temp_path $1/$2-tmp/proxy;
    fastcgi_temp_path $1/$2-tmp/fastcgi;
    uwsgi_temp_path $1/$2-tmp/uwsgi;
    scgi_temp_path $1/$2-tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
CONF
}

nginx_pair_confs() { # dir app_port nga_port ngb_port workers log_dir|off
    local dir=$1 app=$2 nga=$3 ngb=$4 workers=$5 logs=$6
    {
        nginx_common "$dir" ngb "$workers" "$logs"
        cat <<CONF
    upstream app { server 127.0.0.1:$app; keepalive 128; keepalive_requests 10000000; }
    server {
        listen 127.0.0.1:$ngb ssl;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
        }
    }
}
CONF
    } >"$dir/ngb.conf"
    {
        nginx_common "$dir" nga "$workers" "$logs"
        cat <<CONF
    upstream ngb { server 127.0.0.1:$ngb; keepalive 128; keepalive_requests 10000000; }
    server {
        listen 127.0.0.1:$nga;
        location /peers/bob/ {
            proxy_pass https://ngb/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host 127.0.0.1:$ngb;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $dir/ca.pem;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
        }
    }
}
CONF
    } >"$dir/nga.conf"
}
