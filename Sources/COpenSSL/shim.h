#ifndef COPENSSL_SHIM_H
#define COPENSSL_SHIM_H
/* OpenSSL 1.1.1 or 3.x: the library libpq links. Touched only by CacheAsideTLS. */
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

/* OpenSSL spells these as macros, which Swift does not import. */
static inline long cacheaside_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}
static inline int cacheaside_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}
static inline long cacheaside_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}
static inline int cacheaside_BIO_set_mem_eof_return(BIO *bio, int value) {
    return (int)BIO_set_mem_eof_return(bio, value);
}
static inline int cacheaside_ERR_GET_REASON(unsigned long error) {
    return ERR_GET_REASON(error);
}
static inline int cacheaside_ERR_GET_LIB(unsigned long error) {
    return ERR_GET_LIB(error);
}
/* SSL_get_peer_certificate is a function in 1.1.1 and a macro for SSL_get1_peer_certificate in 3.x. */
static inline X509 *cacheaside_SSL_get_peer_certificate(const SSL *ssl) {
    return SSL_get_peer_certificate(ssl);
}
static const int cacheaside_SSL_FILETYPE_PEM = SSL_FILETYPE_PEM;
static const long cacheaside_SSL_MODE_ENABLE_PARTIAL_WRITE = SSL_MODE_ENABLE_PARTIAL_WRITE;
static const long cacheaside_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER = SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
static const int cacheaside_TLS1_2_VERSION = TLS1_2_VERSION;
static const int cacheaside_TLS1_3_VERSION = TLS1_3_VERSION;
static const int cacheaside_ERR_LIB_SSL = ERR_LIB_SSL;
#endif
