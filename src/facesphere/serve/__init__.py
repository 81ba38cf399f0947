"""facesphere.serve: the REST service (`app.create_app`, `facesphere serve`) and its API keys
(`keys.KeyStore`, `facesphere keys`); see docs/serve.md."""
