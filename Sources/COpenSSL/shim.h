#ifndef COPENSSL_SHIM_H
#define COPENSSL_SHIM_H
/* OpenSSL 1.1.1 or 3.x: the library libpq links. Touched only by CacheAsideTLS. */
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#endif
