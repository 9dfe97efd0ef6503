# Omniboard pinned by its npm version (the Docker Hub image has no version tags to pin).
FROM node:20.18.0-bookworm-slim
RUN npm install --global omniboard@2.16.1 && npm cache clean --force
USER node
EXPOSE 9000
ENTRYPOINT ["omniboard"]
