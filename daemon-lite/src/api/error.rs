//! Errors as the Engine API returns them: a status code Docker uses for the case and
//! `{"message": "…"}`.

use hyper::StatusCode;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    pub fn no_such_container(id: &str) -> ApiError {
        ApiError::not_found(format!("No such container: {id}"))
    }
    pub fn no_such_image(reference: &str) -> ApiError {
        ApiError::not_found(format!("No such image: {reference}"))
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

impl From<berth_storage::Error> for ApiError {
    fn from(e: berth_storage::Error) -> ApiError {
        ApiError::internal(e.to_string())
    }
}
